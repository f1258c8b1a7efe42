# Example policies, shipped inside the package as reconciler.policies (see pyproject.toml).
