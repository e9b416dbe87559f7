"""The command line: one scaffold (`scaffold`) and one module per `lightnets` subcommand."""
