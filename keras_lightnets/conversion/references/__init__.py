"""PyTorch reference modules for the parity check (torch only; imported only when torch is importable)."""
