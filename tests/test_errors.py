"""recommender/errors.py is the one home of error classes, under one root that callers catch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import bot
import recommender
from recommender import errors

PACKAGES = (bot, recommender)


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
            if info.name != "bot.__main__":
                names.append(info.name)
    return names


def test_every_error_class_derives_from_the_root():
    classes = [value for value in vars(errors).values() if inspect.isclass(value) and issubclass(value, BaseException)]
    assert len(classes) > 10
    for error in classes:
        assert issubclass(error, errors.LookalikeError), error


@pytest.mark.parametrize("module_name", _modules())
def test_no_module_defines_its_own_error_classes(module_name):
    module = importlib.import_module(module_name)
    own = [
        name
        for name, value in vars(module).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module_name
    ]
    if module_name == "recommender.errors":
        assert own
    else:
        assert own == [], f"{module_name} defines {own}: put error classes in recommender/errors.py"


def test_the_root_carries_the_message_a_caller_shows():
    error = errors.ImageTooBig(25_000_000, 20 * 1024 * 1024)
    assert isinstance(error, errors.LookalikeError)
    assert str(error) == "That image is too big (25.0 MB). Please send one under 20 MB."
    busy = errors.LockBusyError(Path("/srv/.index.lock"), 4242)
    assert isinstance(busy, errors.BuildError) and "process 4242" in str(busy)
