#!/usr/bin/env bash
echo "bazel coverage is not supported in this offline build; use pytest." >&2
exit 1
