"""The ``streamingt2v`` command line.

    streamingt2v generate "PROMPT" [--num-frames N] [--preset tiny|modelscope] [--seed S] [--out DIR]
                          [--no-refine] [--blend randomized|shared-noise|independent] [--fps 10] ...
    streamingt2v preview VIDEO [--frames 6] [--out PNG]
    streamingt2v convert-official streaming_t2v.ckpt --base-model DIR_OR_ID --out DIR
    streamingt2v evaluate VIDEO_OR_MANIFEST [--prompt P] [--clip-model DIR] [--json]
    streamingt2v train --stage vae|base|cam|cam_apm|conc_cond|refiner|clip --steps N --run-dir DIR [--out DIR] ...
    streamingt2v bench [--preset tiny|modelscope] [--device cuda --dtype bfloat16] [--ablations] ...
    streamingt2v plan --speeds speeds.yaml --videos-per-hour N [--num-frames 240] [--plot queues.png]

Bad input exits with status 2 and one line naming the field and its allowed range, before
anything is written.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from models.errors import ConfigError

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    from infra.params import add_arguments
    from models.request import GenerationRequest

    parser = argparse.ArgumentParser(prog="streamingt2v", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate one long video")
    g.add_argument("--out", default="outputs", help="output directory (local path or s3://...)")
    add_arguments(g, GenerationRequest, positional=("prompt",))
    models = g.add_argument_group("models and device")
    models.add_argument("--base-model", help="diffusers Video-LDM directory or hub id (init chunk)")
    models.add_argument("--streaming-model", help="StreamingT2V directory (autoregressive-extend)")
    models.add_argument("--refiner", help="refine's model: a diffusers video model directory or hub id, or an "
                        "MS-Vid2Vid-XL folder (ModelScope format) or the directory convert-vid2vid-xl made of it")
    models.add_argument("--weights", default=None,
                        help="trained (tiny: the toy-world model in toyworld/weights; real presets: the model "
                             "paths) | random (fixed random weights); default: the preset's")
    models.add_argument("--device", default="cpu")
    models.add_argument("--dtype", default="float32")
    models.add_argument("--low-memory", action="store_true",
                        help="only the running stage's model on the device, the others in CPU memory; refine keeps "
                             "the long video in CPU memory and moves one chunk or VAE batch at a time (same video)")
    g.add_argument("--truncate-prompt", action="store_true", help="keep the first 77 CLIP tokens of a longer prompt")

    p = sub.add_parser("preview", help="a PNG strip of a generated video: low-res frames above refined ones")
    p.add_argument("video", help="a video written by generate (OUT/<video-id>.mp4; its .lowres.mp4 beside it is "
                   "shown above it), or any video file")
    p.add_argument("--frames", type=int, default=6, help="frames shown, spread evenly from first to last (default 6)")
    p.add_argument("--out", default=None, help="the PNG to write (default: VIDEO with .preview.png)")

    c = sub.add_parser("convert-official", help="convert the released streaming_t2v.ckpt into a StreamingT2V directory")
    c.add_argument("checkpoint")
    c.add_argument("--base-model", help="diffusers ModelScope Video-LDM directory or hub id (required to convert)")
    c.add_argument("--out", help="the StreamingT2V directory to write (required to convert)")
    c.add_argument("--list-dropped", action="store_true", help="only list the checkpoint's keys that would not be "
                   "converted (dropped, with the reason, or unrecognised) and exit")
    c.add_argument("--dtype", default="float16")
    c.add_argument("--trust-pickle", action="store_true", help="allow full unpickling (only for trusted files)")

    v = sub.add_parser("convert-vid2vid-xl", help="convert the released MS-Vid2Vid-XL folder (ModelScope "
                       "damo/Video-to-Video) into a refiner directory that loads without converting")
    v.add_argument("folder")
    v.add_argument("--out", help="the refiner directory to write (required to convert)")
    v.add_argument("--list-dropped", action="store_true", help="only list the keys that would not be converted "
                   "and exit")
    v.add_argument("--trust-pickle", action="store_true", help="allow full unpickling (only for trusted files)")

    from flows import plan

    plan.add_parser(sub)
    return parser


def _is_local_path(value: str) -> bool:
    """Hub ids look like ``owner/name``; anything else (absolute, relative, deeper) is a path."""
    return value.startswith((".", "/", "~")) or value.count("/") != 1 or Path(value).exists()


def _check_writable(out: str) -> None:
    if "://" in out and not out.startswith("file://"):
        return  # object stores are checked by the first write
    path = Path(out.removeprefix("file://"))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError("out", out, f"a writable directory ({exc.strerror})") from exc


def _generate(args: argparse.Namespace) -> int:
    from infra.params import from_arguments
    from models.request import GenerationRequest
    from stages.sources import ModelSources

    request = GenerationRequest(**from_arguments(args, GenerationRequest))
    sources = ModelSources(preset=args.preset, base_model=args.base_model, streaming_model=args.streaming_model,
                           refiner=args.refiner, device=args.device, dtype=args.dtype, weights=args.weights,
                           low_memory=args.low_memory)
    for option in ("base_model", "streaming_model", "refiner"):
        value = getattr(sources, option)
        if value and _is_local_path(value) and not Path(value).expanduser().is_dir():
            raise ConfigError(option, value, "an existing model directory")
    _check_writable(args.out)

    from infra.init_media import stage_request
    from infra.run_store import RunStore
    from stages.generate import Stages, generate_video

    request = stage_request(request, args.out)  # a clip or image to start from: copied by content hash

    stages = Stages.load(sources, refine=request.refine)
    request.check_prompt_length(stages.extend.model.tokenizer, truncate=args.truncate_prompt)
    store = RunStore(args.out, request.video_id)
    resumed = store.finished_chunks()
    if resumed:
        print(f"resuming {request.video_id}: {len(resumed)} chunk(s) already finished", file=sys.stderr)
    with _ProgressBars() as bars:
        record = generate_video(request, stages, store, bars.progress())
    print(summary_line(record))
    artifacts = record["artifacts"]
    for label, key in (("low res", "low_res_video"), ("record", "record"), ("video", "video")):
        if key in artifacts:
            print(f"{label + ':':9}{artifacts[key]}")
    return 0


def summary_line(record: dict) -> str:
    """One line of what a run made and how long each stage took (from its record)."""
    size, t, params = record["size"], record["timings"], record["params"]
    text = f"{record['frames']} frames, {size['width']}x{size['height']}"
    if (size["low_res_width"], size["low_res_height"]) != (size["width"], size["height"]):
        text += f" (low res {size['low_res_width']}x{size['low_res_height']})"
    text += f", {params['fps']} fps"
    stages = [(name, t.get(key)) for name, key in (("init-chunk", "init_s"), ("extend", "extend_s"),
                                                     ("refine", "refine_s"))]
    timed = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages if seconds is not None)
    if "total_s" in t:
        text += f" in {t['total_s']:.1f} s" + (f" ({timed})" if timed else "")
    return text


def _preview(args: argparse.Namespace) -> int:
    from evaluation.preview import video_preview_png
    from infra import storage
    from infra.run_store import RunStore
    from infra.video_io import read_video

    if not storage.exists(args.video):
        raise ConfigError("video", args.video, "an existing video file")
    if args.frames < 1:
        raise ConfigError("frames", args.frames, "an integer >= 1")
    folder, _, name = args.video.rpartition("/")
    store = RunStore(folder or ".", name.removesuffix(".mp4"))  # generate's files beside the video, if any
    generated = name.endswith(".mp4") and not name.endswith(".lowres.mp4")
    low_res = read_video(store.low_res_video) if generated and storage.exists(store.low_res_video) else None
    record = store.read_record() if generated else None
    title = (record or {}).get("params", {}).get("prompt", "")
    out = args.out or args.video.removesuffix(".mp4") + ".preview.png"
    storage.write_bytes(out, video_preview_png(read_video(args.video), low_res, args.frames, title))
    print(out)
    return 0


class _ProgressBars:
    """tqdm bars for chunks and denoising steps; silent when stderr is not a terminal."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm
        self.disable = not sys.stderr.isatty()
        self.chunks = None
        self.steps = None

    def __enter__(self) -> "_ProgressBars":
        return self

    def __exit__(self, *exc) -> None:
        for bar in (self.chunks, self.steps):
            if bar is not None:
                bar.close()

    def progress(self):
        from stages.generate import Progress

        def chunk_step(chunk, total):
            if self.chunks is None:
                self.chunks = self.tqdm(total=total, desc="chunks", unit="chunk", disable=self.disable, position=0)
            self.chunks.n = chunk.index
            self.chunks.refresh()
            if self.steps is not None:
                self.steps.close()
            self.steps = self.tqdm(desc=f"chunk {chunk.index}", unit="step", disable=self.disable, position=1,
                                   leave=False)

            def on_step(i, n):
                self.steps.total = n
                self.steps.update(1)
                if i == n:
                    self.chunks.n = chunk.index + 1
                    self.chunks.refresh()

            return on_step

        def refine_step(i, n):
            if i == 1:
                if self.steps is not None:
                    self.steps.close()
                self.steps = self.tqdm(total=n, desc="refine", unit="step", disable=self.disable, position=1)
            self.steps.update(1)

        return Progress(chunk_step=chunk_step, refine_step=refine_step)


def _convert(args: argparse.Namespace) -> int:
    from models.convert_official import convert_official
    from models.dtypes import DTYPES
    from models.presets import MODELSCOPE
    from stages.sources import ModelSources

    if not Path(args.checkpoint).is_file():
        raise ConfigError("checkpoint", args.checkpoint, "an existing streaming_t2v.ckpt file")
    if args.list_dropped:
        from models.convert_official import list_dropped

        print("\n".join(list_dropped(args.checkpoint, trust_pickle=args.trust_pickle).lines()))
        return 0
    for option in ("base_model", "out"):
        if getattr(args, option) is None:
            raise ConfigError(option, None, "given to convert (or pass --list-dropped)")
    if args.dtype not in DTYPES:
        raise ConfigError("dtype", args.dtype, f"one of {sorted(DTYPES)}")
    _check_writable(args.out)
    base = ModelSources(preset="modelscope", base_model=args.base_model, streaming_model="-").load_video_ldm()
    model = convert_official(args.checkpoint, base, MODELSCOPE, trust_pickle=args.trust_pickle,
                             torch_dtype=DTYPES[args.dtype])
    model.save_pretrained(args.out)
    print(args.out)
    return 0


def _convert_vid2vid_xl(args: argparse.Namespace) -> int:
    from models.vid2vid_xl import convert_vid2vid_xl, is_vid2vid_xl_folder, list_dropped

    if not is_vid2vid_xl_folder(args.folder):
        raise ConfigError("folder", args.folder, "a ModelScope MS-Vid2Vid-XL folder (configuration.json of the "
                          "video-to-video task and its checkpoint files)")
    if args.list_dropped:
        print("\n".join(list_dropped(args.folder, trust_pickle=args.trust_pickle).lines()))
        return 0
    if args.out is None:
        raise ConfigError("out", None, "given to convert (or pass --list-dropped)")
    _check_writable(args.out)
    print(convert_vid2vid_xl(args.folder, args.out, trust_pickle=args.trust_pickle))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:  # metrics have their own parser (evaluation/cli.py)
        from evaluation.cli import evaluate_main

        return evaluate_main(argv[1:])
    if argv[:1] == ["bench"]:  # the performance harness has its own parser (flows/bench.py)
        from flows.bench import bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["train"]:  # training has its own parser (training/cli.py)
        from training.cli import train_main

        return train_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        from flows import plan

        commands = {"generate": _generate, "preview": _preview, "convert-official": _convert,
                    "convert-vid2vid-xl": _convert_vid2vid_xl, "plan": plan.run}
        return commands[args.command](args)
    except ConfigError as exc:
        print(f"streamingt2v: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
