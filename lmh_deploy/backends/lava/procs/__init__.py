"""Lava Processes of lmh-deploy, one package each (Lava executes sibling files to find models)."""
