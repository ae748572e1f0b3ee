"""scripts/query.py with many photos: answers stream out a batch at a time.

The first batch must be answered before later photos are even read: the last "photo" here is a
named pipe that only gets its bytes once the first answers are out. A script that decoded every
photo before answering would wait on that pipe forever, printing nothing.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time

from recommender.extractor import DEFAULT_BATCH_SIZE
from tests.recommender_helpers import REPO, SCRIPT_ENV, script_command

#: Loading TensorFlow and the model plus one batch, on a busy 2-core machine, with room to spare.
FIRST_BATCH_TIMEOUT = 180.0


def test_query_answers_the_first_batch_before_reading_later_photos(tmp_path, demo_index):
    catalogue = demo_index.catalogue
    photos = [catalogue.images_dir / item.image for item in catalogue.items[: DEFAULT_BATCH_SIZE + 8]]
    late = tmp_path / "late-photo.jpg"
    os.mkfifo(late)  # opening it for reading blocks until we write: "a photo not read yet"
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            script_command("query.py", *photos, late, "--index", demo_index.path, "--k", 2),
            cwd=REPO, env=SCRIPT_ENV, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read_stdout, daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + FIRST_BATCH_TIMEOUT
        last_of_first_batch = str(photos[DEFAULT_BATCH_SIZE - 1])
        while not (last_of_first_batch in output and len(output) >= output.index(last_of_first_batch) + 4):
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no answers for the first {DEFAULT_BATCH_SIZE} photos while a later one is unread; "
                    f"output so far: {output[-5:]}, stderr: {stderr_path.read_text()[-1000:]}"
                ) from None
            assert line is not None, f"query.py ended early: {stderr_path.read_text()[-2000:]}"
            output.append(line)
        assert process.poll() is None  # still waiting for the late photo
        late.write_bytes(photos[3].read_bytes())
        while (line := lines.get(timeout=FIRST_BATCH_TIMEOUT)) is not None:
            output.append(line)
        assert process.wait(timeout=FIRST_BATCH_TIMEOUT) == 0, stderr_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    for path, item in [*zip(photos, catalogue.items), (late, catalogue.items[3])]:
        start = output.index(str(path))
        assert output[start + 1].split() == ["#", "score", "id", "product"]
        assert output[start + 2].split()[2] == item.id, output[start : start + 4]  # its own product first
        assert output[start + 3].split()[0] == "2"
