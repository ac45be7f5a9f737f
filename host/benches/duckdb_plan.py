"""The diff_plan bench's anchor: the same plan as a data engineer would make it
with DuckDB, in one process, on two threads.

Reads the bench's source CSV and destination shards, computes the same
username field, and counts creates, updates and deletes with one FULL OUTER
JOIN on the key, comparing the ten owned fields. Prints one JSON line with the
seconds from connecting to having the counts, the process's CPU seconds and
its peak RSS, as the bench's other variants do.

Run by `cargo bench -p synchost --bench diff_plan` (variant `duckdb`), which
installs the pinned DuckDB into a virtual environment first:
`python duckdb_plan.py DIR`.
"""

import json
import os
import resource
import sys
import time

import duckdb

FIELDS = ["sis_id", "given_name", "family_name", "email", "grade", "school", "city", "status", "score", "username"]

PLAN = """
WITH desired AS (
    SELECT student_id AS key,
           student_id AS sis_id, first_name AS given_name, last_name AS family_name, email,
           grade, school, city, status, score,
           left(lower(first_name), 1) || lower(last_name) || student_id AS username
    FROM read_csv(?, header = true, all_varchar = true)
),
destination AS (
    SELECT key, {unnest}
    FROM read_json(?, format = 'newline_delimited',
                   columns = {{key: 'VARCHAR', fields: 'STRUCT({struct})'}})
)
SELECT count(*) FILTER (WHERE d.key IS NULL) AS creates,
       count(*) FILTER (WHERE s.key IS NOT NULL AND d.key IS NOT NULL AND ({different})) AS updates,
       count(*) FILTER (WHERE s.key IS NULL) AS deletes
FROM desired s FULL OUTER JOIN destination d ON s.key = d.key
""".format(
    unnest=", ".join(f"fields.{f} AS {f}" for f in FIELDS),
    struct=", ".join(f"{f} VARCHAR" for f in FIELDS),
    different=" OR ".join(f"s.{f} IS DISTINCT FROM d.{f}" for f in FIELDS),
)


def main():
    data = sys.argv[1]
    started = time.monotonic()
    connection = duckdb.connect(config={"threads": 2})
    creates, updates, deletes = connection.execute(
        PLAN, [f"{data}/data/in/students.csv", f"{data}/data/out/shard-*.jsonl"]
    ).fetchone()
    seconds = time.monotonic() - started
    times = os.times()
    print(json.dumps({
        "seconds": seconds,
        "cpu_seconds": times.user + times.system,
        # Linux reports KiB.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "creates": creates,
        "updates": updates,
        "deletes": deletes,
    }))


if __name__ == "__main__":
    main()
