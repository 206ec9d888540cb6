"""Runs every test (C++ through CTest, with and without sanitizers, and the aarch64 cross build's
kernel tests under qemu-user when that build exists; Python through pytest)
and ends with one summary line `N passed, N failed`."""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def count_junit(path):
    """(passed, failed, skipped) from a JUnit XML file written by gtest or pytest."""
    passed = failed = skipped = 0
    for case in ET.parse(path).getroot().iter("testcase"):
        kids = {child.tag for child in case}
        if "failure" in kids or "error" in kids:
            failed += 1
        elif "skipped" in kids or case.get("result") == "skipped" or case.get("status") == "notrun":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def run_ctest(build, results, label):
    out = os.path.abspath(os.path.join(results, label))
    os.makedirs(out, exist_ok=True)
    # Passive OpenMP waiting: on a shared or oversubscribed machine spinning threads slow the
    # many short parallel regions of the tests several-fold; tests measure correctness, not speed.
    env = dict(os.environ, GTEST_OUTPUT=f"xml:{out}/", OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))
    print(f"== C++ tests ({label}): ctest --test-dir {build}", flush=True)
    rc = subprocess.call(["ctest", "--test-dir", build, "--output-on-failure"], env=env)
    return rc, glob.glob(os.path.join(out, "*.xml"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--asan-build", default="build-asan")
    ap.add_argument("--aarch64-build", default="build-aarch64")
    args = ap.parse_args()
    os.chdir(ROOT)
    results = os.path.join(args.build, "test-results")
    shutil.rmtree(results, ignore_errors=True)
    os.makedirs(results)

    failures = []
    xmls = []
    rc, files = run_ctest(args.build, results, "release")
    xmls += files
    if rc:
        failures.append("ctest (release)")
    if os.path.isdir(args.asan_build):
        rc, files = run_ctest(args.asan_build, results, "asan-ubsan")
        xmls += files
        if rc:
            failures.append("ctest (asan-ubsan)")

    if os.path.isfile(os.path.join(args.aarch64_build, "CTestTestfile.cmake")):
        rc, files = run_ctest(args.aarch64_build, results, "aarch64-qemu")
        xmls += files
        if rc:
            failures.append("ctest (aarch64 under qemu)")

    print("== Python tests: pytest tests/python", flush=True)
    junit = os.path.join(results, "pytest.xml")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), LONGATTN_BUILD=os.path.abspath(args.build),
               OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "passive"))
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "tests/python", f"--junitxml={junit}"], env=env)
    if rc not in (0, 5):  # 5: no tests collected (counted below as zero)
        failures.append("pytest")
    if os.path.exists(junit):
        xmls.append(junit)

    passed = failed = skipped = 0
    for x in xmls:
        p, f, s = count_junit(x)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    if failures and failed == 0:
        failed = 1  # a runner failed without a test failure (crash, build error): never report green
        print("runners that failed without a counted test failure: " + ", ".join(failures))
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
