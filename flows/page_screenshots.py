"""Screenshots of the web page (flows/web/) during a run and after it, for docs/ and the README.

    python -m flows.page_screenshots --out docs/images

Starts a local Ray cluster and the Serve app (tiny preset, no token) on 127.0.0.1, opens the page
in headless Chromium (Debian's ``chromium``, driven through Playwright; bin/bootstrap installs
both) at 1280x800, makes a video as a person would (prompt, frames, refinement on) and saves
``page-running.png`` once chunk previews have arrived and ``page-done.png`` with the final video
loaded, then ``page-phone.png`` of the same page 390 px wide.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
from pathlib import Path

CHROMIUM_ENV = "STREAMINGT2V_CHROMIUM"
# Headless, and none of the browser's own network traffic (updates, sync, lookups of its hosts).
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PROMPT = "a red circle moving left on a striped background"


def chromium_path() -> str:
    """The Chromium executable: ``$STREAMINGT2V_CHROMIUM``, else ``chromium`` on the PATH."""
    path = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise FileNotFoundError(f"no Chromium: run bin/bootstrap (installs Debian's chromium) or set {CHROMIUM_ENV}")
    return path


def launch(playwright):
    """Headless Chromium through Playwright, with the flags this project's machines need."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_locally(root: str, port: int, **args) -> str:
    """The Serve app on 127.0.0.1:``port`` (tiny preset, no token unless ``api_token``); its URL."""
    from ray import serve

    from flows.serve_api import app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app({"root": root, **({"auth": "none"} if "api_token" not in args else {}), **args}),
              name="streamingt2v", route_prefix="/")
    return f"http://127.0.0.1:{port}"


def make_video(page, num_frames: int, steps: int | None, refine: bool) -> None:
    """Fill in the form as a person would and submit it (no steps: the preset's)."""
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_label("Frames").fill(str(num_frames))
    page.get_by_label("Steps").fill("" if steps is None else str(steps))
    page.get_by_label("Refine (high resolution)").set_checked(refine)
    page.get_by_role("button", name="Generate").click()


def screenshots(out: Path, num_frames: int, steps: int | None, timeout_s: float) -> list[Path]:
    import ray
    from playwright.sync_api import sync_playwright
    from ray import serve

    out.mkdir(parents=True, exist_ok=True)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    saved = []
    try:
        with tempfile.TemporaryDirectory() as root:
            url = serve_locally(root, free_port())
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport=DESKTOP)
                page.goto(url + "/")
                make_video(page, num_frames, steps, refine=True)
                page.locator("#chunks li").nth(1).wait_for(timeout=timeout_s * 1000)
                page.wait_for_function("document.querySelector('#chunks video').readyState >= 2")
                saved.append(out / "page-running.png")
                page.screenshot(path=saved[-1], full_page=True)
                page.locator("#final-figure").wait_for(state="visible", timeout=timeout_s * 1000)
                page.wait_for_function("document.getElementById('final').readyState >= 2")
                # both players playing for a second, then paused: a frame on screen in each
                page.evaluate("""() => { for (const v of document.querySelectorAll('#preview, #final')) {
                    v.muted = true; v.currentTime = 0; v.play(); } }""")
                page.wait_for_timeout(1000)
                page.evaluate("() => { for (const v of document.querySelectorAll('#preview, #final')) v.pause(); }")
                page.wait_for_timeout(300)
                saved.append(out / "page-done.png")
                page.screenshot(path=saved[-1], full_page=True)
                page.set_viewport_size(PHONE)
                page.wait_for_timeout(300)
                saved.append(out / "page-phone.png")
                page.screenshot(path=saved[-1], full_page=False)
                browser.close()
    finally:
        serve.shutdown()
        ray.shutdown()
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="folder of the PNGs")
    parser.add_argument("--num-frames", type=int, default=64, help="frames of the video the page makes")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (the form's Steps field; default: the "
                        "preset's)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the video")
    args = parser.parse_args(argv)
    for path in screenshots(args.out, args.num_frames, args.steps, args.timeout):
        print(path)


if __name__ == "__main__":
    main()
