"""What a batch job really cost, from its tasks' run times, and a summary across jobs.

A job's *actual cost* is, for every attempt of every task (retries included), the time from
the attempt's start to its end as the engine reports it (Cloud Batch: the task's status
events, from ASSIGNED, a VM took it and pulls the image, or RUNNING, to the state it ends in;
the local runner: each attempt's start and end times) x the hourly price of the job's own
machine (its allocation policy: machine type, GPUs, provisioning model), from the same price
table and the same arithmetic as the worst-case ceiling
(:func:`robotoff_batch.config.models.hourly_rate`). It is what the VMs cost while busy with the
tasks; VM boot before the task is assigned and idle time between tasks are not in it (a Cloud
Batch bill is a little higher), and the table's prices are list prices, some of them estimates.

An attempt whose start or end is not known makes the cost *unknown*, never 0: a job that ran
without reported run times did cost money. A job none of whose tasks ever started (no GPU
capacity, cancelled while queued) cost $0. On the local runner nothing is billed: the figure
is what the same run would have cost on the configured machine, and every label says so.

``robotoff-batch cost`` (``robotoff_batch/cli/cost.py``): cost per job type per month,
from the engine's jobs (one listing, then one read per finished job) and the products count of
each job's launch run in the Dagster instance.

Modules: ``actual`` (the cost of one job), ``facts`` (what its launch recorded, the cost
lines and metadata), ``summary`` (across jobs); the
CLI command is ``robotoff_batch/cli/cost.py``.
"""
