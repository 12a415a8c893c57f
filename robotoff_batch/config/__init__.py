"""Job-type configuration: the Pydantic model, its data tables and the YAML loader."""
