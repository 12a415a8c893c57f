"""Constants and helpers shared by the Google Cloud fixtures and tests."""

from __future__ import annotations

import textwrap

from google.api_core.retry import Retry

from robotoff_batch.batch.cloud_batch import make_retry
from robotoff_batch.staging.gcs import default_retry

STAGING_BUCKET = "robotoff-batch-staging"
TEST_PROJECT = "test-project"
TEST_LOCATION = "europe-west4"

# Fake container images for the local runner: image URI -> the command that plays it.
FAKE_IMAGE_OK = "europe-docker.pkg.dev/test/robotoff/fake-ok:1"
FAKE_IMAGE_FAIL = "europe-docker.pkg.dev/test/robotoff/fake-fail:1"
FAKE_IMAGE_SLEEP = "europe-docker.pkg.dev/test/robotoff/fake-sleep:1"

FAKE_CONTAINER_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    mode = sys.argv[1]
    out = os.environ.get("FAKE_MARKER_DIR")
    index = os.environ.get("BATCH_TASK_INDEX", "0")
    if out:
        open(os.path.join(out, f"started-{index}"), "w").close()
    print(f"task {index}: {mode} starting", flush=True)
    if mode == "fail" or os.environ.get("FAKE_FAIL_TASK") == index:
        for i in range(40):
            print(f"task {index}: working {i}", flush=True)
        print(f"task {index}: fatal: no GPU found", file=sys.stderr, flush=True)
        sys.exit(3)
    if mode == "sleep":
        for _ in range(600):
            time.sleep(0.1)
            if out:
                open(os.path.join(out, f"alive-{index}"), "w").write(str(time.time()))
    if out:
        open(os.path.join(out, f"done-{index}"), "w").close()
    """
)


def fast_batch_retry() -> Retry:
    return make_retry(initial=0.01, maximum=0.05, multiplier=2.0, timeout=10.0)


def fast_gcs_retry() -> Retry:
    return default_retry(initial=0.01, maximum=0.05, multiplier=2.0, timeout=20.0)
