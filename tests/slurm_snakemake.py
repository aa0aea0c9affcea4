"""snakemake's command line, with the SLURM plugin's status checks at most 2 s apart.

After each check that finds no job finished, the plugin waits 10 s longer for the
next (up to 180 s): right for a cluster's jobs of minutes, it leaves the test
cluster's jobs of seconds finished and unnoticed for most of the run. Only the
wait changes: the jobs, their submission and their states are the plugin's own.
"""

import sys

import snakemake_executor_plugin_slurm as slurm
from snakemake.cli import main

SECONDS = 2
_check = slurm.Executor.check_active_jobs


async def check_active_jobs(self, active_jobs):
    async for job in _check(self, active_jobs):
        yield job
    self.next_seconds_between_status_checks = min(self.next_seconds_between_status_checks, SECONDS)


slurm.Executor.check_active_jobs = check_active_jobs

if __name__ == "__main__":
    sys.exit(main())
