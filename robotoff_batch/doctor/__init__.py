"""``robotoff-batch doctor``: a read-only production preflight, one line per check.

Before the first real job, each of these can fail, and each fails the job differently (a
refused CreateJob, a job stuck SCHEDULED, a VM that cannot pull its image). The doctor checks
them with the production settings (``ROBOTOFF_BATCH_*`` and the job configs), changes nothing
but one probe object it creates and removes, and says for each failure how to fix it:

- the credentials load (``GOOGLE_CREDENTIALS`` or ADC), and whose they are;
- the project (``ROBOTOFF_BATCH_GCP_PROJECT``, required) and region
  (``ROBOTOFF_BATCH_GCP_LOCATION``, a Batch region, the one every job config runs in);
- the staging bucket is writable and readable: a probe object is created (create-only),
  read back, compared and deleted;
- ``ListJobs`` is permitted in the project, in every location a job may run in (the engine's,
  and each job config's, its capacity fallbacks' included), one check per location;
- the launcher may act as each job config's service account (``iam.serviceAccounts.actAs``,
  asked with IAM ``testIamPermissions``): without it CreateJob is PERMISSION_DENIED;
- each job config's image reference is well formed, pinned (a tag other than ``latest``, or a
  digest), and an Artifact Registry image of this project serving the jobs' region (that
  region's, or a multi-region covering it), in each location of the config (a fallback's own
  ``container_image_uri`` there).

Every check runs against injected clients (the CLI builds the real ones), so the tests run it
against the GCS emulator, the fake Batch service and a fake IAM endpoint.

Modules: ``context`` (settings, clients, the Check result), ``checks`` (the checks, in
order), ``locations`` (those made once per location); the CLI command
is ``robotoff_batch/cli/doctor.py``.
"""
