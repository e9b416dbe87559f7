"""The networks: one module per family, built from the architecture tables in `tables`.

Importing this package imports no Keras; each family's module does.
"""
