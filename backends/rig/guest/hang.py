"""A guest test that never ends, for tests/test_rig.py's hung-guest test (not a
test set; its name keeps pytest from collecting it anywhere else)."""

import time


def test_sleeps_past_the_rig_timeout():
    time.sleep(3600)
