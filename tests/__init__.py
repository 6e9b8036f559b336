"""Test package: import shared helpers as ``from tests.helpers import ...``."""
