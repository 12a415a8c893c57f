pytest_plugins = ["tests.pg_fixtures", "tests.gcp_fixtures"]
