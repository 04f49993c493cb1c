"""What the installed package promises about itself."""

import pathlib
import subprocess
import sys

import dynacache


def test_the_core_and_the_cachelib_drop_in_never_import_boto3():
    code = (
        "import sys, dynacache, dynacache.aio\n"
        "try:\n    import dynacache.cachelib\nexcept ImportError:\n    pass\n"
        "print('boto3' in sys.modules or 'botocore' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_type_stubs_and_marker_ship_with_the_package():
    here = pathlib.Path(dynacache.__file__).parent
    assert (here / "py.typed").exists()
    assert (here / "_native.pyi").exists()


def test_errors_are_one_hierarchy_with_builtin_meanings():
    assert issubclass(dynacache.ValueTooLargeError, dynacache.Error)
    assert issubclass(dynacache.ValueTooLargeError, ValueError)
    assert issubclass(dynacache.TimeoutError, TimeoutError)
    assert issubclass(dynacache.UnavailableError, ConnectionError)
    assert issubclass(dynacache.TableNotFoundError, dynacache.ConfigurationError)
