"""CLIP BPE tokenizer folders (real and truncated vocabularies) and the ids transformers gives.

The vocabulary is rebuilt from open_clip's `bpe_simple_vocab_16e6.txt.gz` exactly like the real
openai/clip-vit-large-patch14 `vocab.json` / `merges.txt`:
  merges = lines[1 : 49152 - 256 - 2 + 1]                       (48894 merges)
  vocab  = bytes_to_unicode() values, then each + "</w>", then "".join(merge) for each merge,
           then "<|startoftext|>", "<|endoftext|>"             (49408 ids)
A truncated vocabulary keeps only the first K merges (512 + K + 2 ids).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile

import open_clip
from open_clip.tokenizer import bytes_to_unicode
from transformers import CLIPTokenizer

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
FULL_MERGES = 49152 - 256 - 2  # 48894

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _letters(n: int) -> str:
    # Single letters separated by spaces: each is exactly one token ("x</w>" is in the byte-level
    # base vocabulary) for the real AND every truncated vocabulary.
    return " ".join(_LETTERS[i % 26] for i in range(n))


_WORDS = ("the quick brown fox jumps over lazy dog while astronaut riding horse on mars under "
          "bright purple sky with many stars").split()

# The same list for every tokenizer (stored in each tokens.json). Order is part of the fixture.
PROMPTS: list[str] = [
    "",
    "   \t\n",
    "a cat",
    "A  Cat\tJUMPS\n over",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9",  # precomposed (NFC) accents
    "cafe\u0301 nai\u0308ve e\u0301",  # NFD combining characters (NFC normaliser composes them)
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",  # CJK / kana
    "\U0001f431 astronaut \U0001f680",  # emoji
    "hello!!! world?! (wow) ... #1",
    "!",  # literal "!" alone: with pad "!" transformers matches it as the special pad token
    "hi!",
    "it's they're we've I'd you'll",
    "IT'S DON'T",  # contractions are matched after lower-casing
    "1234567 3.14159 2024-11-27",
    "<|endoftext|> in the middle",
    "<|startoftext|>start",
    "\uff21\uff22\uff23\uff11\uff12\uff13",  # full-width (NFC keeps them, NFKC would not)
    "don't",
    "non\u00a0breaking\u00a0space and\u3000ideographic",  # NBSP / U+3000 are \s
    "Stra\u00dfe",
    "\u0130stanbul \u0131",  # Turkish dotted capital I / dotless i
    "\ufb01ne ligature",  # U+FB01, not decomposed by NFC
    "zero\u200bwidth",  # U+200B is not whitespace
    "  leading and trailing  ",
    "line1\r\nline2",
    "a photo of an astronaut riding a horse on mars",
    _letters(75),  # exactly 75 content tokens: fills 77 with bos+eos, no padding
    _letters(76),  # 76: one token truncated
    _letters(77),  # 77: two tokens truncated
    " ".join(_WORDS[i % len(_WORDS)] for i in range(300)),  # far over 77
]

# indices of the constructed-length prompts, checked against the tokenizer
EXACT_LENGTH_PROMPTS = {75: len(PROMPTS) - 4, 76: len(PROMPTS) - 3, 77: len(PROMPTS) - 2}


def _bpe_merges() -> list[str]:
    path = os.path.join(os.path.dirname(open_clip.__file__), "bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = lines[1 : FULL_MERGES + 1]
    assert len(merges) == FULL_MERGES
    return merges


def build_vocab(num_merges: int | None) -> tuple[list[str], list[str]]:
    """(vocab in id order, merges as "a b" strings)."""
    merges = _bpe_merges()
    if num_merges is not None:
        merges = merges[:num_merges]
    base = list(bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base]
    vocab += ["".join(m.split(" ")) for m in merges]
    vocab += [BOS, EOS]
    assert len(set(vocab)) == len(vocab), "duplicate vocab entries"
    return vocab, merges


def _added_token(content: str) -> dict:
    # the form transformers 4 wrote in real repos' tokenizer_config.json / special_tokens_map.json
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}


def write_repo_style_files(d: str, vocab: list[str], merges: list[str], pad: str, style: str) -> list[str]:
    """vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json as real hub repos ship them.

    style "added_token": bos/eos/unk as AddedToken objects (openai/clip-vit-large-patch14, SD 2,
    ModelScope style); style "plain": all special tokens as plain strings.
    """
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False) + "\n")
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        f.write("".join(m + "\n" for m in merges))
    if style == "added_token":
        special = {"bos_token": _added_token(BOS), "eos_token": _added_token(EOS),
                   "unk_token": _added_token(EOS), "pad_token": pad}
    elif style == "plain":
        special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad}
    else:
        raise ValueError(style)
    cfg = dict(special)
    cfg.update({"add_prefix_space": False, "do_lower_case": True, "errors": "replace",
                "model_max_length": MODEL_MAX_LENGTH, "tokenizer_class": "CLIPTokenizer"})
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    sm = {k: ({kk: vv for kk, vv in v.items() if kk != "__type"} if isinstance(v, dict) else v)
          for k, v in special.items()}
    with open(os.path.join(d, "special_tokens_map.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(sm, indent=2, sort_keys=True) + "\n")
    return ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]


def tokenize(tok, prompts: list[str]) -> list[list[int]]:
    # exactly what TextToVideoSDPipeline.encode_prompt does
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return [[int(v) for v in row] for row in ids.tolist()]


def content_counts(tok, prompts: list[str]) -> list[int]:
    return [len(tok(p, add_special_tokens=False).input_ids) for p in prompts]


def build_tokenizer(out_dir: str, spec: dict) -> dict:
    """Write pipelines/<name>/tokenizer/ and return the info + ids.

    spec: num_merges (None = real full vocabulary), pad, format ("vocab_merges" | "tokenizer_json"),
    config_style ("added_token" | "plain"; vocab_merges only).
    """
    vocab, merges = build_vocab(spec.get("num_merges"))
    pad = spec["pad"]
    fmt = spec["format"]
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw")
        write_repo_style_files(raw, vocab, merges, pad, spec.get("config_style", "plain"))
        src = CLIPTokenizer.from_pretrained(raw)
        assert len(src) == len(vocab), (len(src), len(vocab))
        src_ids = tokenize(src, PROMPTS)

        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        # what transformers 5 writes: tokenizer_config.json + tokenizer.json (no vocab/merges)
        written = src.save_pretrained(out_dir)
        written = sorted(os.path.basename(p) for p in written)
        if fmt == "vocab_merges":
            # real repos ship vocab.json + merges.txt (+ configs) and no tokenizer.json
            shutil.rmtree(out_dir)
            write_repo_style_files(out_dir, vocab, merges, pad, spec.get("config_style", "plain"))
        elif fmt == "tokenizer_json":
            # keep transformers' tokenizer_config.json minus the loader state it leaks into it
            # ("is_local", "local_files_only": they depend on how the source was loaded, e.g.
            # HF_HUB_OFFLINE); rewrite tokenizer.json without the pretty indentation (same JSON
            # value, same key order, ~1/2 the size)
            p = os.path.join(out_dir, "tokenizer_config.json")
            with open(p, encoding="utf-8") as f:
                cfg = json.load(f)
            for k in ("is_local", "local_files_only"):
                cfg.pop(k, None)
            with open(p, "w", encoding="utf-8", newline="\n") as f:
                f.write(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            p = os.path.join(out_dir, "tokenizer.json")
            with open(p, encoding="utf-8") as f:
                obj = json.load(f)
            with open(p, "w", encoding="utf-8", newline="\n") as f:
                f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
            for extra in ("vocab.json", "merges.txt"):
                assert not os.path.exists(os.path.join(out_dir, extra))
        else:
            raise ValueError(fmt)

    tok = CLIPTokenizer.from_pretrained(out_dir)
    assert len(tok) == len(vocab), (len(tok), len(vocab))
    assert tok.model_max_length == MODEL_MAX_LENGTH
    assert tok.pad_token == pad
    ids = tokenize(tok, PROMPTS)
    same_as_source = ids == src_ids
    assert same_as_source, "reloaded tokenizer folder tokenizes differently from the source files"
    counts = content_counts(tok, PROMPTS)
    for n, i in EXACT_LENGTH_PROMPTS.items():
        assert counts[i] == n, (n, counts[i])

    info = {
        "tokenizers_from_file_matches": _check_tokenizers_lib(out_dir, ids, tok) if fmt == "tokenizer_json" else None,
        "format": fmt,
        "files": sorted(os.listdir(out_dir)),
        "transformers_save_pretrained_wrote": written,
        "vocab_size": len(tok),
        "num_merges": len(merges),
        "model_max_length": tok.model_max_length,
        "pad_token": tok.pad_token,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "unk_token_id": tok.unk_token_id,
        "config_style": spec.get("config_style", "plain") if fmt == "vocab_merges" else "transformers5",
    }
    return {"tok": tok, "info": info, "ids": ids, "counts": counts}


def _check_tokenizers_lib(out_dir: str, ids: list[list[int]], tok) -> bool:
    """Does the plain `tokenizers` library (what a Rust loader of tokenizer.json uses), with manual
    truncation to 77 (keeping eos last) and padding, give the same ids as transformers?"""
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    ok = True
    for prompt, want in zip(PROMPTS, ids):
        got = t.encode(prompt).ids
        if len(got) > MODEL_MAX_LENGTH:
            got = got[: MODEL_MAX_LENGTH - 1] + [tok.eos_token_id]
        got = got + [tok.pad_token_id] * (MODEL_MAX_LENGTH - len(got))
        if got != want:
            print(f"    tokenizers.Tokenizer.from_file differs for {prompt!r}: {got[:8]} vs {want[:8]}")
            ok = False
    return ok


def tokens_json(t: dict) -> dict:
    info = t["info"]
    return {
        "prompts": PROMPTS,
        "input_ids": t["ids"],
        "model_max_length": info["model_max_length"],
        "pad_token": info["pad_token"],
        "pad_token_id": info["pad_token_id"],
        "content_token_counts": t["counts"],
    }
