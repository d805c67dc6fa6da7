"""vidseg app in a real browser (headless Chromium through Selenium): paint the first mask, propagate with flow,
correct a later frame, propagate again, export; the exported masks equal `vidseg segment`'s with the exported given
masks. With VIDSEG_APP_SCREENSHOTS=DIR each step's screenshot is written there (docs/app/ in the repository)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette", reason="the app extra is not installed: pip install -e '.[app]'")
pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[dev]'")

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from vidseg.app.server import AppServer
from vidseg.cli.main import main
from vidseg.data.scene import make_scene_clip
from vidseg.io.masks import read_mask

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium / chromedriver on this machine (Debian: apt-get install chromium chromium-driver; "
    ".ci/run installs them)")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1180,980", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        pytest.skip(f"Chromium does not start here: {exc.msg}")
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def shoot(driver, name: str) -> None:
    """A small PNG of the page (a 760-px-wide palette image) into $VIDSEG_APP_SCREENSHOTS."""
    folder = os.environ.get("VIDSEG_APP_SCREENSHOTS")
    if not folder:
        return
    from io import BytesIO

    from PIL import Image

    image = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image = image.resize((760, round(image.height * 760 / image.width)), Image.LANCZOS)
    Path(folder).mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(Path(folder) / f"{name}.png", optimize=True)


def text_has(driver, element_id: str, text: str, timeout: float = 60.0) -> None:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(
            lambda d: text in d.find_element(By.ID, element_id).text)
    except TimeoutException:  # say what the page showed instead: a failure in CI is read from the log alone
        shown = driver.find_element(By.ID, element_id).text
        message = driver.find_element(By.ID, "message").text
        raise AssertionError(f"#{element_id} never said {text!r}: it says {shown!r}, the page's message is "
                             f"{message!r}") from None


class Canvas:
    """Pointer input on the overlay canvas, in the video's pixels."""

    def __init__(self, driver, size: tuple[int, int]):
        self.driver, (self.height, self.width) = driver, size
        self.element = driver.find_element(By.ID, "overlay")

    def _offset(self, x: float, y: float) -> tuple[int, int]:
        box = self.element.rect  # offsets are from the element's centre
        return round(x * box["width"] / self.width - box["width"] / 2), round(y * box["height"] / self.height
                                                                             - box["height"] / 2)

    def drag(self, points: list[tuple[float, float]]) -> None:
        actions = ActionChains(self.driver, duration=10).move_to_element_with_offset(self.element, *self._offset(*points[0]))
        actions.click_and_hold()
        for point in points[1:]:
            actions.move_to_element_with_offset(self.element, *self._offset(*point))
        actions.release().perform()

    def clicks(self, points: list[tuple[float, float]]) -> None:
        actions = ActionChains(self.driver, duration=10)
        for point in points:
            actions.move_to_element_with_offset(self.element, *self._offset(*point)).click()
        actions.perform()


def choose(driver, tool: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"input[name=tool][value={tool}]").click()


def go_to(driver, index: int) -> None:
    driver.execute_script("const s = document.getElementById('slider'); s.value = arguments[0];"
                          "s.dispatchEvent(new Event('input'));", index)
    text_has(driver, "frame-label", f"frame {index + 1} /")


def click(driver, element_id: str, timeout: float = 30.0) -> None:
    """Click a button once it is enabled: the page keeps its job buttons disabled until the view has caught up with
    a finished job, a little after the job's message shows, and a click on a disabled button is lost."""
    button = driver.find_element(By.ID, element_id)
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: button.is_enabled())
    except TimeoutException:
        raise AssertionError(f"#{element_id} stayed disabled; the page's message is "
                             f"{driver.find_element(By.ID, 'message').text!r}") from None
    button.click()


def outline(mask: np.ndarray) -> list[tuple[float, float]]:
    """The corners of the largest region of ``mask``, as a person would click them."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    corners = cv2.approxPolyDP(max(contours, key=cv2.contourArea), 1.5, True)
    return [(float(x), float(y)) for x, y in corners[:, 0]]


def set_size(driver, pixels: int) -> None:
    driver.execute_script("document.getElementById('size').value = arguments[0];", pixels)


def test_paint_propagate_correct_export_in_chromium(browser, tmp_path):
    clip = make_scene_clip(tmp_path / "clip", seed=0, num_frames=24)
    truth = read_mask(clip.first_mask)
    server = AppServer(tmp_path / "work")
    server.state.initial = server.state.open(clip.frames_dir).id
    server.start()
    try:
        browser.get(server.url)
        text_has(browser, "frame-label", "frame 1 / 24")
        Select(browser.find_element(By.ID, "method")).select_by_value("flow")
        canvas = Canvas(browser, truth.shape)
        choose(browser, "polygon")  # object 1: a polygon around the animal, then a brush stroke along its back
        canvas.clicks(outline(truth == 1))
        browser.find_element(By.TAG_NAME, "body").send_keys("\n")
        choose(browser, "brush")
        rows, cols = np.nonzero(truth == 1)
        canvas.drag([(cols.min() + 30, rows.min() + 40), (cols.max() - 40, rows.min() + 40)])
        text_has(browser, "mask-kind", "edited, not saved")
        shoot(browser, "1-paint")
        click(browser, "save")
        text_has(browser, "mask-kind", "painted")

        click(browser, "propagate")
        text_has(browser, "progress-text", "propagate: 24 / 24 frames")
        text_has(browser, "progress-text", "finished")
        text_has(browser, "frame-label", "frame 24 / 24")  # the view followed the frames as they finished
        shoot(browser, "2-propagate")

        # Correct frame 12: erase where object 1 drifted, outline the animal again, add the tree trunk as object 2,
        # propagate again from there.
        go_to(browser, 11)
        result = read_mask(next((tmp_path / "work").glob("frames-*/masks/00011.png")))
        truth = read_mask(clip.gt_dir / "00011.png")
        rows, cols = np.nonzero((result == 1) & (truth != 1))
        choose(browser, "eraser")
        set_size(browser, 40)
        for row in range(rows.min(), rows.max() + 1, 20):
            canvas.drag([(cols.min(), row), (cols.max(), row)])
        choose(browser, "polygon")
        canvas.clicks(outline(truth == 1))
        browser.find_element(By.TAG_NAME, "body").send_keys("\n")
        click(browser, "add-object")
        choose(browser, "brush")
        set_size(browser, 24)
        canvas.drag([(218, 10), (218, 120), (216, 230)])
        shoot(browser, "3-correct")
        click(browser, "propagate")  # saves the edit first
        text_has(browser, "progress-text", "finished")
        text_has(browser, "message", "propagated frames 12-24 with flow")

        click(browser, "export")
        text_has(browser, "export-result", "masks-again", timeout=90)
        shoot(browser, "4-export")
        # A path that is no video: one line on the page.
        browser.find_element(By.ID, "path").send_keys(str(tmp_path / "missing.mp4"))
        click(browser, "open")
        text_has(browser, "message", "video not found")
        assert "error" in browser.find_element(By.ID, "message").get_attribute("class")
    finally:
        server.close()

    export = next((tmp_path / "work").glob("frames-*/export"))
    assert sorted(p.name for p in (export / "given").iterdir()) == ["00000.png", "00011.png"]
    painted = read_mask(export / "given" / "00000.png")
    first = read_mask(clip.first_mask) == 1
    assert ((painted == 1) & first).sum() > 0.8 * first.sum()  # the polygon landed on the animal
    out = tmp_path / "segment"
    assert main(["segment", str(clip.frames_dir), "--mask", str(export / "given"), "--method", "flow", "--out",
                 str(out), "--quiet", "--threads", "1"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(p.name for p in (export / "masks").glob("*.png")) and len(names) == 24
    for name in names:
        assert np.array_equal(read_mask(export / "masks" / name), read_mask(out / name)), name
    assert 2 in np.unique(read_mask(export / "masks" / "00023.png"))  # the correction was carried forward
