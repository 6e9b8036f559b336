"""Test package: import shared helpers as ``from tests.support.helpers import ...``."""
