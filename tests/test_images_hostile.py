"""recommender/images.py against hostile images: tiny files that ask the decoder for gigabytes or for seconds.

The whole generated corpus (standin_bot_api/hostile_photos.py) is decoded by the real ``load_image``
in ONE child process whose address space is capped at what its imports use plus ``CAP_MB``
(``resource.setrlimit(RLIMIT_AS)``). Every file must come back as a model input or as an
``ImageDecodeError`` with a friendly message: never a ``MemoryError``, another exception, a killed
or crashed process. Time and memory per input are measured, not asserted, by
``benchmarks/decode_budget.py``.
"""

from __future__ import annotations

from standin_bot_api.hostile_photos import ACCEPT, REFUSE, cases, decode_in_child, write_corpus

#: Address space the child may use above what Python, numpy, Pillow and the engine's imports take.
CAP_MB = 200
#: Generous: the budget is 1 s per accepted input, measured by the benchmark on an idle machine.
SLOW_SECONDS = 5.0


def test_every_hostile_image_decodes_or_is_refused_under_a_memory_cap(tmp_path):
    corpus = write_corpus(tmp_path, [case.name for case in cases() if case.in_test])
    child, results = decode_in_child([path for _, path in corpus], cap_mb=CAP_MB, timeout=300)
    unfinished = [case.name for case, _ in corpus if case.name not in results]
    assert child.returncode == 0 and not unfinished, (
        f"the decoding process died (exit {child.returncode}) at {unfinished[:1]}: {child.stderr[-2000:]}"
    )

    problems = []
    for case, _ in corpus:
        result = results[case.name]
        outcome, message = result["outcome"], result["message"]
        if outcome not in ("accepted", "refused"):
            problems.append(f"{case.name} ({case.why}): {outcome} {message}")
        elif case.expect == ACCEPT and outcome != "accepted":
            problems.append(f"{case.name} ({case.why}) should be accepted, was refused: {message}")
        elif case.expect == REFUSE and outcome != "refused":
            problems.append(f"{case.name} ({case.why}) should be refused, was accepted")
        elif outcome == "refused" and not (message[:1].isupper() and message.endswith(".") and "Error" not in message):
            problems.append(f"{case.name}: refusal is not a friendly sentence: {message!r}")
        if result["seconds"] > SLOW_SECONDS:
            problems.append(f"{case.name} ({case.why}) took {result['seconds']:.1f} s")
    assert not problems, "\n".join(problems)
