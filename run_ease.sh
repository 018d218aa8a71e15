#!/usr/bin/env bash
# EASE (or Popularity: config pop): ./run_ease.sh [mode] [config] [overrides...], mode both
# and config ease unless given. An alias of ./run.sh with that default; --help lists modes.
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" --default-config ease "${@:-both}"
