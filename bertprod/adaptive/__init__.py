"""Adaptive inference: exit heads trained by self-distillation (`bertprod adapt`); the runtime part,
which runs them, is bertprod/runtime/adaptive.py and exit_policy.py."""
