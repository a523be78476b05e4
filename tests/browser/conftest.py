"""The browser tests' services: the real local stack (tests/stack_support.py)."""

from tests import stack_support

stack = stack_support.stack
