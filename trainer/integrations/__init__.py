"""Bridges to other tools (Optuna for ``trainer sweep``, ...): each imports its library only when used."""
