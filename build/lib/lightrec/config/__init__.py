"""Configuration: every value checked before work (check), the resolvers the YAML uses, and
building lightrec's own classes from a config, never anything else (build)."""
