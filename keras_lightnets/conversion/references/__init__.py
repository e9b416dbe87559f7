"""PyTorch reference modules for the converter's parity check (torch only, imported only when torch is)."""
