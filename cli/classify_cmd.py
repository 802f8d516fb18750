"""``clipdex classify IMAGES... --classes classes.txt --method METHOD`` and
``clipdex train-reco INDEX --out fuser.pt``."""
from __future__ import annotations

import click

from cli.options import device_option, json_option, top_k_option
from cli.output import ProgressBars, print_json
from retrieval.classify.inputs import find_images, read_classes, read_labels
from retrieval.classify.pipeline import ClassificationRun, ClassifyOptions
from retrieval.classify.registry import ALL, METHODS
from retrieval.classify.support import classifier_model
from retrieval.classify.train import train_reco_on_index
from retrieval.encode.encoder import load_encoder


class MethodName(click.Choice):
    """A method of the registry, or ``all``; anything else is refused naming the choices."""

    def __init__(self):
        super().__init__([*METHODS, ALL])

    def convert(self, value, param, ctx):
        if value not in self.choices:
            self.fail(f"unknown method {value!r}; choose from {', '.join(METHODS)} or {ALL}", param, ctx)
        return value


def method_options(command):
    """The options every classifying command takes: the classes, the methods and their support index and shots."""
    for option in reversed((
        click.option("--classes", "classes_path", required=True, type=click.Path(dir_okay=False),
                     help="Class names, one per line."),
        click.option("--method", "methods", multiple=True, default=("zeroshot",), show_default=True,
                     type=MethodName(), help="A method, or all (repeatable)."),
        click.option("--support", default=None,
                     help="A clipdex image index made with the same model (susx, xmore, reco)."),
        click.option("--shots", default=None,
                     help="Few-shot images: a folder per class, or a manifest with a label column."))):
        command = option(command)
    return command


def _text_line(pred, methods: list[str], single: bool) -> str:
    if single:
        top = "  ".join(f"{c} {p:.3f}" for c, p in pred.top[methods[0]])
    else:
        top = "  ".join(f"{m}: {pred.top[m][0][0]} {pred.top[m][0][1]:.3f}" for m in methods)
    label = f"  [{pred.label}]" if pred.label is not None else ""
    return f"{pred.path}{label}  {top}"


def _print_summary(summary: dict, n_images: int) -> None:
    n = max((s["n"] for s in summary.values()), default=0)
    click.echo(f"accuracy on {n} labelled images of {n_images}")
    width = max(len(m) for m in summary)
    click.echo(f"{'method'.ljust(width)}  {'top-1':>7}  {'top-5':>7}")
    for m, s in summary.items():
        t1 = f"{s['top1']:6.2f}%" if s["top1"] is not None else "      -"
        t5 = f"{s['top5']:6.2f}%" if s["top5"] is not None else "      -"
        click.echo(f"{m.ljust(width)}  {t1:>7}  {t5:>7}")
    click.echo("most confused (true -> predicted: count):")
    for m, s in summary.items():
        pairs = ", ".join(f"{t} -> {p}: {c}" for t, p, c in s["confused"]) or "none"
        click.echo(f"  {m.ljust(width)}  {pairs}")


@click.command()
@click.argument("images", nargs=-1, required=True, metavar="IMAGES...")
@method_options
@click.option("--labels", "labels_path", default=None, help="CSV/JSONL with path,label: also print accuracy.")
@click.option("--templates", default="openai80", show_default=True, help="openai80, simple7, single or a file.")
@click.option("--descriptions", default=None, help="CuPL-style JSON {class: [sentences]} added to the prompts.")
@top_k_option(5, maximum=1000)
@click.option("--tune", default=None, help="A labelled split (folder per class or manifest) to grid-search on.")
@click.option("--fuser", default=None, type=click.Path(dir_okay=False), help="RECO fusers from clipdex train-reco.")
@click.option("--model", default=None, help="Model spec (default: the support index's model).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 4096))
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0, 64), help="Decoding processes.")
@click.option("--per-class", default=100, show_default=True, type=click.IntRange(1), help="SuS-LC images per class.")
@click.option("--no-cache", is_flag=True, help="Retrieve the SuS-X support set again instead of reusing the cache.")
@device_option
@json_option
def classify(images, classes_path, methods, support, shots, labels_path, templates, descriptions, k, tune, fuser,
             model, batch_size, workers, per_class, no_cache, device, as_json):
    """Classify images by class names alone, helped by a support index (susx, xmore, reco) or few shots."""
    classes = read_classes(classes_path)
    paths, labels = find_images(images)
    if labels_path:
        labels = {**labels, **read_labels(labels_path)}
    encoder = load_encoder(classifier_model(model, support), device=device)
    opts = ClassifyOptions(methods=methods, templates=templates, descriptions=descriptions, support=support,
                           shots=shots, tune=tune, fuser=fuser, top_k=k, batch_size=batch_size, workers=workers,
                           per_class=per_class, use_cache=not no_cache)
    n = 0
    with ProgressBars("img") as bars, ClassificationRun(classes, opts, encoder, bars) as run:
        run.prepare()
        for note in run.notes:
            click.echo(note, err=True)
        names = [r.name for r in run.runners]
        for pred in run.predict(paths, labels):
            n += 1
            if as_json:
                print_json({"path": pred.path, "label": pred.label,
                            "predictions": {m: [{"class": c, "prob": round(p, 6)} for c, p in top]
                                            for m, top in pred.top.items()}})
            else:
                click.echo(_text_line(pred, names, len(names) == 1))
    click.echo(f"classified {n} images with {', '.join(names)} in {run.elapsed:.1f}s "
               f"({run.images_per_s:.1f} images/s)", err=True)
    if run.evaluation.labelled:
        summary = run.evaluation.summary()
        if as_json:
            print_json({"summary": {"images": n, "accuracy": summary, "notes": run.notes,
                                    "images_per_s": round(run.images_per_s, 2)}})
        else:
            _print_summary(summary, n)


@click.command("train-reco")
@click.argument("index_path", metavar="INDEX")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the fusers (.pt).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(1))
@click.option("-k", "--k", "k", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Retrieved items per query.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(2))
@click.option("--lr", default=1e-4, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint in --out.")
@device_option
@json_option
def train_reco_cmd(index_path, out, epochs, k, batch_size, lr, seed, resume, device, as_json):
    """Train RECO's image and text fusers on the index's own image-caption pairs (CLIP frozen)."""
    with ProgressBars("pair", lines=("epoch",)) as bars:
        result = train_reco_on_index(index_path, out, epochs=epochs, k=k, batch_size=batch_size, lr=lr, seed=seed,
                                     resume=resume, device=device, on_progress=bars)
    if as_json:
        print_json(result)
    else:
        click.echo(f"trained RECO fusers on {result['pairs']} pairs for {result['epochs']} epochs "
                   f"(final loss {result['final_loss']:.4f}) -> {out}")
