"""A model file that fails on import (for the CLI error tests)."""
import torch  # noqa: F401

raise ImportError("missing_dependency_on_purpose")
