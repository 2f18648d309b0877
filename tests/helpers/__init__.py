"""Shared test code (imported as ``helpers``: pytest puts tests/ on sys.path)."""
