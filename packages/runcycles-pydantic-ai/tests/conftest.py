pytest_plugins = ("runcycles_testing.fixtures",)
