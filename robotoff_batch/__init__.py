"""robotoff-batch: run Open Food Facts ML batch jobs on Google Cloud Batch through Dagster."""
