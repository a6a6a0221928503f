"""The reviewer's journey in a real headless browser (Debian's chromium + chromium-driver, driven by
Selenium) against a real `mlflow server`: the version page shows the description and the aliases,
the source run's artifacts show the confusion matrix, and "Compare" for two versions shows the param
that differs and both confusion matrices side by side.

Skipped when chromium or chromium-driver is missing, unless AEPIPE_REQUIRE_BROWSER=1 (set by
.ci/run, which installs them), where a missing browser fails instead."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from aepipe.tracking.lineage import client as tracking_client
from aepipe.tracking.promotion import promote
from tests import registry_world

pytestmark = pytest.mark.slow
NAME, EXP = "ui-digits", "ui-review"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

if not (CHROMIUM and DRIVER):
    if os.environ.get("AEPIPE_REQUIRE_BROWSER") == "1":
        pytest.fail(
            "AEPIPE_REQUIRE_BROWSER=1 but chromium/chromedriver are missing: apt-get install -y chromium "
            "chromium-driver"
        )
    pytest.skip(
        "chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory, mlflow_server):
    """Two versions (1 vs all labels per class); v1 champion, v2 challenger."""
    import mlflow

    root = tmp_path_factory.mktemp("ui")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mlflow.set_tracking_uri(mlflow_server.url)
        world = registry_world.build(root, EXP, NAME)
        runs = {key: registry_world.register(world, key) for key in ("few", "all")}
        promote(tracking_client(), NAME, "test_accuracy", 0.0, version=runs["few"]["version"], experiment=EXP)
        exp_id = mlflow.MlflowClient(mlflow_server.url).get_experiment_by_name(EXP).experiment_id
        yield {"url": mlflow_server.url, "runs": runs, "exp": exp_id}
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1600,1200",
    ):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def wait_for(driver, check, timeout: float = 60.0, what: str = ""):
    """Poll the single-page app until ``check(body_text)`` holds (it renders after the fetches)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element(By.TAG_NAME, "body").text
        if check(text):
            return text
        time.sleep(0.5)
    Path("/tmp/aepipe-ui-failure.png").write_bytes(driver.get_screenshot_as_png())
    pytest.fail(f"the MLflow UI did not show {what} within {timeout}s; page text:\n{text[-2000:]}")


def click_text(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{text}']")
    assert found, f"no element with text {text!r}"
    driver.execute_script("arguments[0].scrollIntoView(); arguments[0].click();", found[0])


def shown_images(driver, min_width: int = 100) -> int:
    """Images the browser actually decoded (natural width), not just <img> tags."""
    from selenium.webdriver.common.by import By

    return sum(
        1
        for img in driver.find_elements(By.TAG_NAME, "img")
        if (driver.execute_script("return arguments[0].naturalWidth", img) or 0) >= min_width
    )


def test_version_page_shows_description_and_aliases(reviewed, browser) -> None:
    v2 = reviewed["runs"]["all"]["version"]
    browser.get(f"{reviewed['url']}/#/models/{NAME}/versions/{v2}")
    text = wait_for(browser, lambda t: "conv autoencoder + linear head" in t, what="the description")
    assert "challenger" in text and "validation accuracy (selection)" in text
    assert "pretrained without labels" in text and "aepipe.val_loss" in text
    browser.get(f"{reviewed['url']}/#/models/{NAME}")
    text = wait_for(browser, lambda t: "champion" in t and "challenger" in t, what="both aliases")


def test_source_run_artifacts_show_the_confusion_matrix(reviewed, browser) -> None:
    run = reviewed["runs"]["all"]["this_run_id"]
    browser.get(f"{reviewed['url']}/#/experiments/{reviewed['exp']}/runs/{run}/artifacts")
    wait_for(browser, lambda t: "confusion.png" in t, what="the artifact list")
    before = shown_images(browser)
    click_text(browser, "confusion.png")
    deadline = time.monotonic() + 30
    while shown_images(browser) <= before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shown_images(browser) > before, "the confusion matrix image was not displayed"


def test_compare_two_versions_shows_param_difference_and_both_confusion_matrices(reviewed, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{reviewed['url']}/#/models/{NAME}")
    wait_for(browser, lambda t: "Version 2" in t, what="the version list")
    boxes = browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
    assert len(boxes) >= 3, "no version checkboxes"  # header + one per version
    for box in boxes[1:3]:
        browser.execute_script("arguments[0].click();", box)
    compare = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text.strip() == "Compare"]
    assert compare and compare[0].is_enabled()
    compare[0].click()
    text = wait_for(
        browser, lambda t: "Comparing 2 Versions" in t and "Parameters" in t, what="the comparison"
    )
    assert "classifier.labels_per_class" in text  # the one param that differs: 1 vs None (all)
    line = next(ln for ln in text.splitlines() if ln.startswith("classifier.labels_per_class"))
    assert "1" in line and "None" in line, line
    assert "test_accuracy" in text and "val_loss" in text

    # the confusion matrices side by side: "Compare" of the two versions' source runs
    runs = [reviewed["runs"][k]["this_run_id"] for k in ("few", "all")]
    ids = ",".join(f'"{r}"' for r in runs)
    browser.get(f'{reviewed["url"]}/#/compare-runs?runs=[{ids}]&experiments=["{reviewed["exp"]}"]')
    wait_for(
        browser, lambda t: "Artifacts" in t and "No common artifacts" not in t, what="the common artifacts"
    )
    deadline = time.monotonic() + 30
    while not browser.find_elements(By.XPATH, "//*[normalize-space(text())='confusion.png']"):
        assert time.monotonic() < deadline, "confusion.png is not among the common artifacts"
        time.sleep(0.5)
    click_text(browser, "confusion.png")
    deadline = time.monotonic() + 30
    while shown_images(browser) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shown_images(browser) >= 2, "both confusion matrices should be displayed"
