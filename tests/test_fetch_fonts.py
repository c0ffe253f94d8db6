"""datasets/fetch_fonts.py on wheels the tests build (real font files, zipped the way the PyPI font wheels are)."""

import importlib.util
import os
import subprocess
import sys
import zipfile

import pytest

from digit_detectron.data.synthetic.glyphs import default_font_dir
from digit_detectron.data.synthetic.styles import training_fonts
from digit_detectron.utils.io import sha256_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "datasets", "fetch_fonts.py")


def load_script():
    spec = importlib.util.spec_from_file_location("fetch_fonts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def font_wheel(path, fonts, licence="OFL.txt"):
    """A wheel holding ``fonts`` (real font files) under ``<name>/files/`` with a licence text; its SHA-256."""
    package = os.path.basename(path).split("-")[0]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{package}/__init__.py", "")
        for font in fonts:
            z.write(font, f"{package}/files/{os.path.basename(font)}")
        z.writestr(f"{package}/files/{licence}", "SIL Open Font License 1.1")
    return sha256_of(path)


def test_pins_name_the_families_that_stay_out_of_both_held_out_sides():
    fetch = load_script()
    assert fetch.requirement("font_source_serif_pro-0.0.1-py3-none-any.whl") == "font-source-serif-pro==0.0.1"
    names = [f for _, fonts, _ in fetch.EXTRA_FONTS.values() for f in fonts]
    assert len(names) == 18 and all(len(sha) == 64 for sha, _, _ in fetch.EXTRA_FONTS.values())
    ruler = ("roboto", "sourcesans", "fredoka", "amatic", "freesans", "dejavuserif", "stix", "cmti", "cmmi")
    assert not [n for n in names if n.lower().startswith(ruler)]


def test_fetch_unpacks_pinned_wheels_and_the_fonts_join_the_training_fonts(tmp_path, monkeypatch):
    fetch = load_script()
    font_dir = default_font_dir()
    serif = [os.path.join(font_dir, "cmr10.ttf"), os.path.join(font_dir, "cmb10.ttf")]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = "font_test_family-1.0-py3-none-any.whl"
    sha = font_wheel(str(wheels / wheel), serif)
    monkeypatch.setattr(fetch, "EXTRA_FONTS", {wheel: (sha, ("cmr10.ttf", "cmb10.ttf"), "OFL.txt")})
    out = tmp_path / "fonts"
    fetch.main([str(out), "--wheels", str(wheels)])
    assert sorted(os.listdir(out)) == ["LICENSE-font_test_family.txt", "cmb10.ttf", "cmr10.ttf"]
    assert (out / "cmr10.ttf").read_bytes() == open(serif[0], "rb").read()
    # cmr10 / cmb10 are training fonts already: training_fonts reads both files and skips them as known.
    fonts, skipped = training_fonts([str(out)])
    assert fonts == [] and len(skipped) == 2
    # Present fonts are not fetched again (no wheel needed).
    os.remove(wheels / wheel)
    assert fetch.fetch_fonts(str(out), str(wheels)) == [str(out / "cmb10.ttf"), str(out / "cmr10.ttf")]


def test_a_wheel_that_is_not_the_pinned_one_is_refused_and_nothing_is_unpacked(tmp_path, monkeypatch):
    fetch = load_script()
    wheel = "font_lato-0.1.0-py3-none-any.whl"  # the pinned name, other contents
    monkeypatch.setattr(fetch, "EXTRA_FONTS", {wheel: fetch.EXTRA_FONTS[wheel]})
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    font_wheel(str(wheels / wheel), [os.path.join(default_font_dir(), "cmr10.ttf")])
    out = tmp_path / "fonts"
    with pytest.raises(ValueError, match=f"{wheel}: SHA-256 [0-9a-f]{{64}} is not the pinned ff74f2d4"):
        fetch.main([str(out), "--wheels", str(wheels)])
    assert os.listdir(out) == []


def test_the_command_names_a_missing_wheel_in_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    cmd = [sys.executable, SCRIPT, str(tmp_path / "fonts"), "--wheels", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert "font_caladea-0.0.2-py3-none-any.whl" in errors[0] and "font-caladea==0.0.2" in errors[0]


@pytest.mark.parametrize("missing", ["Lato-Black.ttf"])
def test_a_wheel_without_a_listed_font_names_it(tmp_path, monkeypatch, missing):
    fetch = load_script()
    wheel = tmp_path / "font_x-1.0-py3-none-any.whl"
    sha = font_wheel(str(wheel), [os.path.join(default_font_dir(), "cmr10.ttf")])
    with pytest.raises(ValueError, match=f"font_x-1.0-py3-none-any.whl: has no {missing}"):
        fetch.unpack(str(wheel), sha, ("cmr10.ttf", missing), "OFL.txt", str(tmp_path))


def test_make_model_fetches_the_fonts_and_trains_both_cycles_on_them_only_when_asked(monkeypatch):
    spec = importlib.util.spec_from_file_location("make_model", os.path.join(REPO, "tools", "make_model.py"))
    make_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_model)
    commands = []

    class Stop(Exception):
        pass

    def record(cmd):  # the commands make_model would run, up to its first training
        commands.append([os.path.basename(str(c)) for c in cmd[1:3]] + list(cmd[3:]))
        if "demo.py" in commands[-1]:
            raise Stop

    monkeypatch.setattr(make_model, "run", record)
    for argv, fonts in ((["--extra-fonts"], True), ([], False)):
        commands.clear()
        with pytest.raises(Stop):
            make_model.main(argv)
        fetched = [c for c in commands if "fetch_fonts.py" in c]
        assert bool(fetched) is fonts and commands[-1][0] == "demo.py"
        train = commands[-1]
        assert ("--fonts" in train and train[train.index("--fonts") + 1] == make_model.FONTS) is fonts, train
