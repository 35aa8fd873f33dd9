"""setup.cfg declares compatible ranges; constraints.txt pins the one set CI tests, inside them."""

import configparser
import pathlib
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _requirements(section, key):
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = [line.split("#")[0].strip() for line in config[section][key].splitlines()]
    return [Requirement(line) for line in lines if line]


def _pins():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_is_a_range_and_its_pin_lies_inside():
    pins = _pins()
    requirements = (_requirements("options", "install_requires")
                    + _requirements("options.extras_require", "test"))
    for requirement in requirements:
        assert not any(spec.operator == "==" for spec in requirement.specifier), (
            f"{requirement} pins one version: give a compatible range; pins belong in constraints.txt")
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[name]), f"constraints.txt's {name}=={pins[name]} is outside " \
                                                            f"setup.cfg's {requirement}"


def test_ci_installs_as_the_readme_says():
    """CI's install line is the README's, with the constraints file."""
    ci = re.search(r"pip install (.*)", (ROOT / ".ci" / "run").read_text()).group(1)
    assert "-c constraints.txt" in ci
    assert f"pip install {ci}" in (ROOT / "README.md").read_text()
