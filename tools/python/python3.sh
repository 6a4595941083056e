#!/usr/bin/env bash
# Bazel's Python interpreter: runs python3 from PATH (Debian has no `python`),
# or $I3D_PYTHON if set (pass it with --action_env/--test_env).
exec "${I3D_PYTHON:-python3}" "$@"
