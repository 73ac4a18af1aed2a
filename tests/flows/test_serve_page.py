"""The web pages of the Serve app (flows/web/) in a real browser: headless Debian Chromium driven
by Playwright against the local Serve app (tiny preset, a bearer token, 127.0.0.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from flows.page_screenshots import PHONE, free_port, launch, serve_locally
from infra.manifest import BatchManifest
from infra.video_io import write_mp4
from models.request import GenerationRequest

pytestmark = pytest.mark.integration

TOKEN = "page-token"
PROMPT = "a red circle moving left on a striped background"
WAIT_MS = 180_000


@dataclass
class Site:
    url: str
    batch_out: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False,
                            timeout=60)


@pytest.fixture(scope="module")
def site(ray_local, tmp_path_factory):
    from ray import serve

    batch_out = tmp_path_factory.mktemp("batch")
    url = serve_locally(str(tmp_path_factory.mktemp("page")), free_port(), api_token=TOKEN,
                        batches=[str(batch_out)], max_queue=4)
    yield Site(url, batch_out)
    serve.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture()
def page(site, browser):
    """The page at /, the token entered as a person would (the service asks for it)."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(site.url + "/")
    token_field = page.get_by_label("Bearer token of this service")
    token_field.wait_for(state="visible")
    token_field.fill(TOKEN)
    page.get_by_role("button", name="Use token").click()
    page.locator("#token-section").wait_for(state="hidden")
    assert "Preset tiny" in page.locator("#service-line").inner_text()
    yield page
    context.close()


def fill(page, prompt: str = PROMPT, frames: str = "40", seed: str = "0", steps: str = "2",
         refine: bool = False) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Frames").fill(frames)
    page.get_by_label("Seed").fill(seed)
    page.get_by_label("Steps").fill(steps)
    page.get_by_label("Refine (high resolution)").set_checked(refine)


def job_item(page, video_id: str):
    return page.locator(f"#jobs li[data-id='{video_id}']")


def test_make_a_video_watch_it_grow_and_play_it(page, site):
    fill(page, frames="40", steps="2")
    page.get_by_role("button", name="Generate").click()
    video_id = GenerationRequest(PROMPT, num_frames=40, seed=0, num_inference_steps=2, refine=False).video_id

    # a chunk preview arrives while the job runs and plays as a video
    page.wait_for_function("() => { const v = document.querySelector('#chunks video.chunk-preview');"
                           " return v && v.readyState >= 1 && v.duration > 0; }", timeout=WAIT_MS)
    assert page.locator("#preview").get_attribute("src").startswith("blob:")  # the growing preview plays chunk 0

    page.wait_for_function("() => document.getElementById('watch-status').textContent.startsWith('done')",
                           timeout=WAIT_MS)
    page.wait_for_function("() => document.getElementById('final').duration > 0", timeout=WAIT_MS)
    assert page.evaluate("document.getElementById('final').duration") == pytest.approx(4.0, abs=0.2)  # 40 at 10 fps
    assert page.locator("#chunks video.chunk-preview").count() == 4
    download = page.get_by_role("link", name="Download MP4")
    assert download.get_attribute("download") == f"{video_id}.mp4"
    assert download.get_attribute("href").startswith("blob:")
    item = job_item(page, video_id)
    item.locator(".status").filter(has_text="done: 4 of 4 chunks").wait_for()
    assert item.locator("progress").evaluate("p => p.value === p.max")

    with site.client() as client:  # the list the page shows is the service's
        listed = client.get("/v1/videos", params={"limit": 5}).json()["jobs"]
    assert listed[0]["id"] == video_id and listed[0]["prompt"] == PROMPT and listed[0]["params"]["num_frames"] == 40


def test_a_bad_input_shows_the_servers_message_next_to_its_field(page):
    fill(page, frames="100000")
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#err-num_frames")
    error.filter(has_text="num_frames").wait_for()
    assert "1200" in error.inner_text()  # the allowed range, as the server words it
    assert page.get_by_label("Frames").get_attribute("aria-invalid") == "true"

    fill(page, frames="40", seed="-1")
    page.get_by_role("button", name="Generate").click()
    page.locator("#err-seed").filter(has_text="seed=-1: must be").wait_for()
    assert page.locator("#err-num_frames").inner_text() == ""  # the earlier error is gone
    assert page.locator("#jobs li").filter(has_text="100000").count() == 0


def test_cancel_a_running_job_then_run_it_again(page, site):
    fill(page, prompt="a blue square moving up on a dotted background", frames="1200", steps="2")
    page.get_by_role("button", name="Generate").click()
    video_id = GenerationRequest("a blue square moving up on a dotted background", num_frames=1200, seed=0,
                                 num_inference_steps=2, refine=False).video_id
    item = job_item(page, video_id)
    item.locator(".status").filter(has_text="running").wait_for(timeout=WAIT_MS)
    item.get_by_role("button", name="Cancel").click()
    page.wait_for_function(f"() => document.querySelector(\"#jobs li[data-id='{video_id}']\").dataset.status"
                           " === 'cancelled'", timeout=WAIT_MS)
    again = item.get_by_role("button", name="Run again")
    assert again.is_visible() and not item.get_by_role("button", name="Cancel").is_visible()

    again.click()
    page.wait_for_function(f"() => ['queued', 'running'].includes(document.querySelector("
                           f"\"#jobs li[data-id='{video_id}']\").dataset.status)", timeout=WAIT_MS)
    with site.client() as client:
        assert client.get(f"/v1/videos/{video_id}").json()["attempts"] == 2
        client.delete(f"/v1/videos/{video_id}")


def test_every_control_has_a_label_the_keyboard_submits_and_a_phone_width_fits(page, site):
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, textarea, select, button')]
        .filter(e => !e.closest('[hidden]'))
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.outerHTML)""")
    assert unnamed == []

    page.get_by_label("Prompt", exact=True).focus()
    page.keyboard.type("a green triangle moving right on a checkered background")
    for name, value in (("Prompt schedule", ""), ("Frames", "16"), ("Seed", "3"), ("Steps", "1")):
        page.keyboard.press("Tab")
        page.keyboard.press("Control+A")
        page.keyboard.type(value) if value else page.keyboard.press("Delete")
        assert page.evaluate("document.activeElement.labels[0].textContent").startswith(name)
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # refine off
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Generate"
    page.keyboard.press("Enter")
    video_id = GenerationRequest("a green triangle moving right on a checkered background", num_frames=16, seed=3,
                                 num_inference_steps=1, refine=False).video_id
    job_item(page, video_id).wait_for(timeout=WAIT_MS)

    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.get_by_role("button", name="Generate").bounding_box()["width"] > 0


def _batch_with_one_finished_video(out: Path) -> tuple[str, str]:
    done = GenerationRequest("a red circle moving left", num_frames=16, seed=1)
    waiting = GenerationRequest("a blue square moving up", num_frames=16, seed=2)
    manifest = BatchManifest.create("demo-batch", [done, waiting])
    frames = np.zeros((16, 64, 64, 3), np.uint8)
    frames[..., 0] = 220  # red
    write_mp4(frames, str(out / "done.mp4"))
    manifest.update(done.video_id, status="done", init_status="done", extend_status="done", refine_status="done",
                    chunks_done=1, chunks_total=1, video_uri=str(out / "done.mp4"), total_s=12.5, ofs=81.2)
    manifest.write(str(out / "manifest.parquet"))
    return done.video_id, waiting.video_id


def test_the_batch_page_shows_rows_metrics_and_thumbnails(site, browser):
    done, waiting = _batch_with_one_finished_video(site.batch_out)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(site.url + "/batches/demo-batch")
    page.get_by_label("Bearer token of this service").fill(TOKEN)
    page.get_by_role("button", name="Use token").click()
    row = page.locator(f"#rows tr[data-id='{done}']")
    row.wait_for()
    assert "done" in row.inner_text() and "ofs 81.2" in row.inner_text() and "total 12.5 s" in row.inner_text()
    thumbnail = row.get_by_role("img")
    page.wait_for_function(f"() => document.querySelector(\"tr[data-id='{done}'] img\").naturalWidth === 160")
    red = thumbnail.evaluate("""img => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
        c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0);
        return Array.from(g.getImageData(80, 80, 1, 1).data); }""")
    assert red[0] > 180 and red[1] < 60 and red[2] < 60  # the video's first frame
    assert "pending" in page.locator(f"#rows tr[data-id='{waiting}']").inner_text()
    row.get_by_role("link").click()  # plays the video in place
    page.wait_for_function(f"() => document.querySelector(\"tr[data-id='{done}'] video\")?.duration > 0")
    context.close()

    with site.client() as client:
        assert client.get("/v1/batches/demo-batch").json()["counts"] == {"done": 1, "pending": 1}
        assert client.get("/v1/batches/no-such-batch").status_code == 404
        assert client.get(f"/v1/batches/demo-batch/videos/{waiting}.mp4").status_code == 404
    assert httpx.get(site.url + "/v1/batches/demo-batch", trust_env=False).status_code == 401  # data needs the token
    assert httpx.get(site.url + "/batches/demo-batch", trust_env=False).status_code == 200  # the page does not
