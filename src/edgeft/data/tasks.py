"""Task = examples (train/dev) + kind + metric. GLUE, Dolly-15k, GSM8K, LM text, and a user's own file.

Examples are plain dicts so every method, the runtime and the federated clients can share them:
- classification / regression: {"id", "text", "text2"?, "label"}
- generation: {"id", "instruction", "input", "response", "category"?}
- lm: {"id", "text"} (documents; the featurizer packs them into fixed-length blocks)
"""

from __future__ import annotations

import math
import random
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeft.data import metrics as M
from edgeft.data.readers import TEXT_SUFFIXES, read_jsonl, read_paragraphs, read_records, read_tsv, require_field
from edgeft.errors import ConfigError, DataError
from edgeft.paths import DATASETS_DIR

Kind = Literal["classification", "regression", "generation", "lm"]

# Row and answer lengths a task takes where none are given (--max-length, --max-new-tokens). GSM8K's answers are
# worked solutions ending in "#### N" (SmolLM2's tokens, prompt and answer: median 201, 99th percentile 434; the
# answer alone: 99th percentile 297), so the others' 128 and 64 cut the number that exact match reads from 95% of
# the training rows and 91% of the dev answers: a run at the defaults could not score one answer.
MAX_LENGTH, MAX_NEW_TOKENS = 128, 64
TASK_LENGTHS = {"gsm8k": (384, 256)}


def default_lengths(name: str) -> tuple[int, int]:
    """(max_length, max_new_tokens) for a task named `name` (a bundled task's own, else the defaults), so that
    finetune, eval, launch, federate and compress score a task alike."""
    key = name.lower()
    return TASK_LENGTHS.get(ALIASES.get(key, key), (MAX_LENGTH, MAX_NEW_TOKENS))


class TaskConfig(BaseModel):
    """What data to use and how much of it. Unknown keys are errors (extra='forbid')."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="sst2|cola|mrpc|rte|stsb|wnli|dolly|gsm8k|wikitext2|shakespeare, or a data file path")
    data_file: Optional[str] = None
    dev_file: Optional[str] = None
    kind: Optional[Literal["classification", "regression", "generation", "lm"]] = None
    text_column: str = "text"
    text2_column: Optional[str] = Field(None, description="second text of a pair task (default: 'text2' when the "
                                         "file's first row has that field)")
    label_column: str = "label"
    instruction_column: str = "instruction"
    input_column: str = "input"
    response_column: str = "response"
    prompt_template: Optional[str] = Field(
        None, description="your own classification/regression file: what the model reads, with {text} (and {text2} "
                          "for a pair), e.g. 'Premise: {text}\\nHypothesis: {text2}\\nDoes the premise entail the "
                          "hypothesis?' (default: 'Text: {text}\\n... Label (a or b):'). On a causal LM the model "
                          "reads the prompt's last token, so a question there helps methods that keep the backbone "
                          "frozen (PAC)")
    label_words: Optional[list[str]] = Field(None, description="your own classification file: one word per label, "
                                             "in the labels' sorted order (numbers by value), that the LM head reads "
                                             "(default: the label names)")
    label_names: Optional[list[str]] = Field(None, description="your own classification file: its labels in class "
                                             "order, as an adapter was trained on them (`edgeft eval` passes the "
                                             "adapter's); default: the training file's labels, sorted")
    dev_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    train_samples: Optional[int] = Field(None, gt=0)
    dev_samples: Optional[int] = Field(None, gt=0)
    max_length: int = Field(MAX_LENGTH, ge=8, description="tokens a row is cut to (default: the task's own, "
                            "default_lengths: 384 for GSM8K, 128 for the others)")
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _task_max_length(cls, data):
        """A bundled task's own max_length where none is given: GSM8K's rows need more than the others'."""
        if isinstance(data, dict) and data.get("max_length") is None and isinstance(data.get("name"), str):
            data = {**data, "max_length": default_lengths(data["name"])[0]}
        return data


@dataclass
class Task:
    name: str
    kind: Kind
    train: list[dict]
    dev: list[dict]
    metric_name: str
    label_names: list[str] = field(default_factory=list)
    # Causal-LM classification: the prompt template and one verbalizer word per label.
    prompt_template: str = ""
    label_words: list[str] = field(default_factory=list)
    config: TaskConfig | None = None
    # Whether examples are pairs, when there are no rows to look at (a task rebuilt from an adapter's note).
    pair: Optional[bool] = None

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        """Whether examples are sentence pairs (`text2`): GLUE MRPC, RTE, WNLI, STS-B, a user's file read with
        text2_column. Classification and regression only; the first example decides (all have the same fields)."""
        if self.pair is not None:
            return self.pair
        rows = self.train or self.dev
        return self.kind in ("classification", "regression") and bool(rows) and "text2" in rows[0]

    def shape(self) -> dict:
        """What a model built for this task depends on, without its rows: saved beside an adapter so that it
        can be rebuilt (merged, exported, compressed, chatted with) where the training file is not at hand."""
        return {"name": self.name, "kind": self.kind, "metric_name": self.metric_name,
                "label_names": list(self.label_names), "prompt_template": self.prompt_template,
                "label_words": list(self.label_words), "pair": self.is_pair}

    @classmethod
    def from_shape(cls, shape: dict) -> "Task":
        """A task without rows from `shape()`'s dict."""
        return cls(train=[], dev=[], **shape)

    def score(self, preds, refs) -> dict[str, float]:
        """All metrics of this task; the main one is under `metric_name`, whose scorer is used: a user's file named
        mrpc.csv or gsm8k.jsonl is scored as what it holds, not as the bundled task of that name."""
        return SCORERS[self.metric_name](preds, refs)


def _glue_scorer(main: str):
    def score(preds, labels):
        out = {"accuracy": M.accuracy(preds, labels)}
        if main == "f1":
            out["f1"] = M.f1_binary(preds, labels)
        if main == "mcc":
            out["mcc"] = M.matthews(preds, labels)
        return out

    return score


def _regression_scorer(preds, labels):
    return {"pearson": M.pearson(preds, labels), "spearman": M.spearman(preds, labels)}


def _generation_scorer(preds, refs):
    return {"rougeL": M.rouge_l(preds, refs)}


def _gsm8k_scorer(preds, refs):
    return {"exact_match": M.exact_match_number(preds, refs), "rougeL": M.rouge_l(preds, refs)}


SCORERS = {  # by a task's main metric
    "accuracy": _glue_scorer("accuracy"),
    "pearson": _regression_scorer,
    "rougeL": _generation_scorer,
    "perplexity": lambda preds, refs: {},  # perplexity comes from the loss, see train.evaluate
    "f1": _glue_scorer("f1"),
    "mcc": _glue_scorer("mcc"),
    "exact_match": _gsm8k_scorer,
}


# --- GLUE -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GlueSpec:
    folder: str
    n_columns: int
    header: bool
    text_col: int
    text2_col: Optional[int]
    label_col: int
    labels: tuple  # raw label values in class-index order (None for regression)
    label_names: tuple
    metric: str
    template: str
    words: tuple


GLUE = {
    "sst2": GlueSpec("SST-2", 2, True, 0, None, 1, ("0", "1"), ("negative", "positive"), "accuracy",
                     "Review: {text}\nSentiment (negative or positive):", (" negative", " positive")),
    "cola": GlueSpec("CoLA", 4, False, 3, None, 1, ("0", "1"), ("unacceptable", "acceptable"), "mcc",
                     "Sentence: {text}\nIs this sentence grammatically acceptable (no or yes)?", (" no", " yes")),
    "mrpc": GlueSpec("MRPC", 5, True, 3, 4, 0, ("0", "1"), ("not_equivalent", "equivalent"), "f1",
                     "Sentence 1: {text}\nSentence 2: {text2}\nDo the two sentences mean the same (no or yes)?",
                     (" no", " yes")),
    "rte": GlueSpec("RTE", 4, True, 1, 2, 3, ("entailment", "not_entailment"), ("entailment", "not_entailment"),
                    "accuracy", "Premise: {text}\nHypothesis: {text2}\nDoes the premise entail the hypothesis (yes or no)?",
                    (" yes", " no")),
    "wnli": GlueSpec("WNLI", 4, True, 1, 2, 3, ("0", "1"), ("not_entailment", "entailment"), "accuracy",
                     "Premise: {text}\nHypothesis: {text2}\nDoes the premise entail the hypothesis (no or yes)?",
                     (" no", " yes")),
    "stsb": GlueSpec("STS-B", 10, True, 7, 8, 9, (), (), "pearson", "", ()),
}


def _load_glue_split(name: str, spec: GlueSpec, split: str) -> list[dict]:
    path = DATASETS_DIR / "glue" / spec.folder / f"{split}.tsv"
    examples = []
    for lineno, f in read_tsv(path, n_columns=spec.n_columns, header=spec.header):
        raw = f[spec.label_col].strip()
        if spec.labels:
            if raw not in spec.labels:
                raise DataError(f"{path}:{lineno}: label '{raw}' is not one of {list(spec.labels)}.")
            label = spec.labels.index(raw)
        else:
            try:
                label = float(raw)
            except ValueError as err:
                raise DataError(f"{path}:{lineno}: score '{raw}' is not a number.") from err
        ex = {"id": f"{name}-{split}-{lineno}", "text": f[spec.text_col].strip(), "label": label}
        if spec.text2_col is not None:
            ex["text2"] = f[spec.text2_col].strip()
        examples.append(ex)
    return examples


def _glue_task(name: str) -> Task:
    spec = GLUE[name]
    kind = "regression" if not spec.labels else "classification"
    return Task(
        name=name, kind=kind,
        train=_load_glue_split(name, spec, "train"), dev=_load_glue_split(name, spec, "dev"),
        metric_name=spec.metric, label_names=list(spec.label_names),
        prompt_template=spec.template, label_words=list(spec.words),
    )


# --- instruction data -----------------------------------------------------------------------------

DOLLY_DIR = DATASETS_DIR / "instruct" / "dolly15k"
DOLLY_TRAIN_FILES = [f"local_training_{i}.jsonl" for i in range(4)] + ["public_training.jsonl"]


def load_dolly_records(files: list[str]) -> list[dict]:
    out = []
    for name in files:
        path = DOLLY_DIR / name
        for lineno, row in read_jsonl(path):
            out.append({
                "id": f"dolly-{Path(name).stem}-{lineno}",
                "instruction": require_field(path, lineno, row, "instruction"),
                "input": require_field(path, lineno, row, "context", allow_empty=True),
                "response": require_field(path, lineno, row, "response"),
                "category": require_field(path, lineno, row, "category"),
            })
    return out


def _dolly_task() -> Task:
    return Task(name="dolly", kind="generation", train=load_dolly_records(DOLLY_TRAIN_FILES),
                dev=load_dolly_records(["global_test.jsonl"]), metric_name="rougeL")


def _gsm8k_split(split: str) -> list[dict]:
    path = DATASETS_DIR / "instruct" / "gsm8k" / f"{split}.jsonl"
    out = []
    for lineno, row in read_jsonl(path):
        answer = require_field(path, lineno, row, "answer")
        if "####" not in answer:
            raise DataError(f"{path}:{lineno}: answer has no '#### <number>' final line.")
        out.append({"id": f"gsm8k-{split}-{lineno}", "instruction": require_field(path, lineno, row, "question"),
                    "input": "", "response": answer})
    return out


def _gsm8k_task() -> Task:
    return Task(name="gsm8k", kind="generation", train=_gsm8k_split("train"), dev=_gsm8k_split("test"),
                metric_name="exact_match")


# --- plain text -----------------------------------------------------------------------------------

def _documents(path: Path, prefix: str, heading_split: bool) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: data file not found.")
    text = path.read_text(encoding="utf-8")
    if heading_split:  # WikiText: one document per top-level ' = Title = ' heading
        docs, current = [], []
        for line in text.split("\n"):
            if line.startswith(" = ") and not line.startswith(" = = ") and current:
                docs.append("\n".join(current))
                current = []
            current.append(line)
        docs.append("\n".join(current))
    else:  # paragraphs separated by blank lines
        docs = [d for d in text.split("\n\n")]
    return [{"id": f"{prefix}-{i}", "text": d} for i, d in enumerate(docs) if d.strip()]


def _wikitext_task() -> Task:
    # The shipped WikiText-2 has no train split: valid trains, test evaluates (see datasets/SOURCES.md).
    base = DATASETS_DIR / "lm" / "wikitext-2"
    return Task(name="wikitext2", kind="lm", train=_documents(base / "valid.txt", "wt2-valid", True),
                dev=_documents(base / "test.txt", "wt2-test", True), metric_name="perplexity")


def _shakespeare_task() -> Task:
    docs = _documents(DATASETS_DIR / "lm" / "tinyshakespeare.txt", "shakespeare", False)
    cut = int(len(docs) * 0.9)  # the usual 90/10 split, in file order
    return Task(name="shakespeare", kind="lm", train=docs[:cut], dev=docs[cut:], metric_name="perplexity")


# --- a user's own file ----------------------------------------------------------------------------

PAIR_FIELD = "text2"  # a user file whose rows have this field is a sentence-pair task (unless text2_column says)
CATEGORY_FIELD = "category"  # an instruction row's category (Dolly's field), kept when a user file has it


def _pair_column(path: Path, records: list[tuple[int, dict]], pair: Optional[bool]) -> Optional[str]:
    """PAIR_FIELD when the rows are pairs, checked row by row: a file whose rows (or a dev file whose rows, against
    the training rows' `pair`) differ would have some second texts read and others dropped without a word."""
    having = [lineno for lineno, row in records if PAIR_FIELD in row]
    given, pair = pair is not None, bool(having) if pair is None else pair
    odd = next((lineno for lineno, row in records if (PAIR_FIELD in row) != pair), None)
    if odd is not None:
        if pair:
            though = "the training rows are pairs" if given else f"line {having[0]} has one"
            raise DataError(f"{path}:{odd}: no second text ('{PAIR_FIELD}'), though {though}: rows are either all "
                            f"pairs or all single texts. Add '{PAIR_FIELD}' here, or remove it from every row.")
        raise DataError(f"{path}:{odd}: a second text ('{PAIR_FIELD}'), though the training rows have none: a model "
                        f"trained on single texts would read it as one. Remove '{PAIR_FIELD}' from the dev rows, or "
                        "give every training row one.")
    return PAIR_FIELD if pair else None


def _custom_records(path: Path, cfg: TaskConfig, kind: str, split: str, pair: Optional[bool] = None) -> list[dict]:
    """Rows of a user's file. Ids carry the split, so a train and a dev file of the same name (in two
    folders) never share an id: caches key activations by id. `pair`: whether the training rows are pairs (None:
    this file's rows tell)."""
    if kind == "lm":
        return _text_documents(path, cfg, split)
    out = []
    records = read_records(path)
    text2_column = cfg.text2_column
    named_input = cfg.input_column != TaskConfig.model_fields["input_column"].default
    if kind == "generation" and named_input and records and not any(cfg.input_column in r for _, r in records):
        raise DataError(f"{path}: no row has the input column '{cfg.input_column}' named by --input-column "
                        f"(task.input_column in a config file); fields present: {', '.join(records[0][1])}.")
    if text2_column is None and kind != "generation":
        text2_column = _pair_column(path, records, pair)  # the documented format's second text: never dropped
    for lineno, row in records:
        def column(option: str, name: str | None = None, **kw) -> str:  # the TaskConfig key naming it, for errors
            return require_field(path, lineno, row, name or getattr(cfg, option), column_option=option, **kw)

        ex = {"id": f"{path.name}-{split}-{lineno}", "_where": f"{path}:{lineno}"}
        if kind == "generation":
            ex["instruction"] = column("instruction_column")
            ex["input"] = column("input_column", allow_empty=True) if cfg.input_column in row else ""
            ex["response"] = column("response_column")
            if CATEGORY_FIELD in row:  # as Dolly's: what a federation's Dirichlet split and held-out category use
                ex["category"] = column("", CATEGORY_FIELD, allow_empty=True)
        else:
            ex["text"] = column("text_column")
            if text2_column:
                ex["text2"] = column("text2_column", text2_column)
            ex["label"] = column("label_column").strip()
        out.append(ex)
    if not out:
        raise DataError(f"{path}: no data rows.")
    return out


def _text_documents(path: Path, cfg: TaskConfig, split: str) -> list[dict]:
    """A language-modelling file: a plain-text file's paragraphs, or the text column of a .jsonl/.csv/.tsv file
    (--task-kind lm), one document each; the featurizer packs them into blocks of max_length tokens."""
    if Path(path).suffix.lower() in TEXT_SUFFIXES:
        rows = [(lineno, {"text": text}) for lineno, text in read_paragraphs(path)]
        column = "text"
    else:
        rows, column = read_records(path), cfg.text_column
    out = [{"id": f"{path.name}-{split}-{lineno}", "_where": f"{path}:{lineno}",
            "text": require_field(path, lineno, row, column, column_option="text_column")} for lineno, row in rows]
    if not out:
        raise DataError(f"{path}: no data rows.")
    return out


def _infer_kind(path: Path, cfg: TaskConfig) -> str:
    if Path(path).suffix.lower() in TEXT_SUFFIXES:
        return "lm"
    rows = read_records(path)
    if not rows:
        raise DataError(f"{path}: no data rows; the file needs at least one record to tell the task kind.")
    first = rows[0][1]
    if cfg.response_column in first:
        return "generation"
    if cfg.label_column in first:
        return "classification"
    # A later row with the column: the first row lacks it (a JSON Lines row may), not the file.
    later = next(((n, c) for n, r in rows for c in (cfg.response_column, cfg.label_column) if c in r), None)
    if later is not None:
        raise DataError(f"{path}:{rows[0][0]}: missing field '{later[1]}', which line {later[0]} has (fields "
                        f"present: {', '.join(first)}); fill it in or remove this row (edgeft tells the task kind "
                        "from the first row; --task-kind sets it).")
    raise ConfigError(
        f"{path}: cannot tell the task kind: the first row has neither '{cfg.response_column}' (generation) "
        f"nor '{cfg.label_column}' (classification) (fields present: {', '.join(first)}). Name the columns with "
        "--response-column/--label-column (and --instruction-column, --text-column) or set --task-kind."
    )


def _refuse_scores_as_classes(path: Path, rows: list[dict]) -> None:
    """A label column of numbers with fractions (STS-B's 3.8, 2.5; 3,8 with a decimal comma) is a score: read as
    classes it would train a classifier over every distinct value, or stop on a dev score the training rows never
    had."""
    def number(value: str) -> float | None:
        try:
            return float(value)
        except ValueError:
            return None

    labels = sorted({ex["label"] for ex in rows})
    if all(re.fullmatch(r"-?\d+(,\d+)?", v) for v in labels) and any("," in v for v in labels):
        raise ConfigError(f"{path}: the label column holds numbers with a decimal comma (e.g. "
                          f"{next(v for v in labels if ',' in v)}), a score: write them with a decimal point (3.8) "
                          "and set --task-kind regression (or --task-kind classification to treat each value as a "
                          "class).")
    values = [number(v) for v in labels]
    if all(v is not None and math.isfinite(v) for v in values) and any(v != round(v) for v in values):
        raise ConfigError(f"{path}: the label column holds {len(labels)} distinct numbers with fractions (e.g. "
                          f"{labels[len(labels) // 2]}), a score: set --task-kind regression (or --task-kind "
                          "classification to treat each value as a class).")


def _custom_task(cfg: TaskConfig) -> Task:
    path = Path(cfg.data_file or cfg.name)
    kind = cfg.kind or _infer_kind(path, cfg)
    train = _custom_records(path, cfg, kind, "train")
    if cfg.kind is None and kind == "classification":
        _refuse_scores_as_classes(path, train)
    file_rows = train
    if cfg.dev_file:
        dev = _custom_records(Path(cfg.dev_file), cfg, kind, "dev", pair="text2" in train[0])
    else:  # split by seed; every row lands in exactly one side
        order = list(range(len(train)))
        random.Random(cfg.seed).shuffle(order)
        n_dev = max(1, int(round(len(train) * cfg.dev_fraction)))
        if n_dev >= len(train):
            raise DataError(f"{path}: {len(train)} row(s) are too few to split into train and dev; add rows or give --dev-file.")
        dev = [train[i] for i in sorted(order[:n_dev])]
        train = [train[i] for i in sorted(order[n_dev:])]
    metric = {"generation": "rougeL", "regression": "pearson", "lm": "perplexity"}.get(kind, "accuracy")
    task = Task(name=path.stem, kind=kind, train=train, dev=dev, metric_name=metric)
    if kind in ("classification", "regression"):
        _encode_custom_labels(task, path, cfg.label_names, file_rows)
        _apply_prompt(task, cfg, path)
    elif cfg.prompt_template is not None or cfg.label_words is not None:
        raise ConfigError(f"{path}: prompt_template and label_words (--prompt-template, --label-words) are for "
                          "classification and regression files; " + (
                              "a language-modelling file is its text alone." if kind == "lm" else
                              "a generation file's prompt is its instruction (and input) column."))
    return task


def _sorted_labels(labels: set[str]) -> list[str]:
    """Labels in class order: by value when all are numbers (1, 2, 10, as a user gives --label-words for them; as
    text, 10 would come before 2 and a word meant for 2 would name 10), else as text."""
    try:
        values = {label: float(label) for label in labels}
    except ValueError:
        return sorted(labels)
    if not all(math.isfinite(v) for v in values.values()):
        return sorted(labels)
    return sorted(labels, key=lambda label: (values[label], label))


def _encode_custom_labels(task: Task, path: Path, given: Optional[list[str]] = None,
                          file_rows: Optional[list[dict]] = None) -> None:
    """Labels as class indices: in the order `given` (an adapter's classes, which a file scored with it may hold
    only some of), else the training file's labels sorted (`file_rows`: all its rows, dev split included, so a
    label whose only rows the seeded split put in dev is still a class, not an 'unseen' one). A regression score
    must be a finite number: one NaN makes the loss, the model and the metrics NaN."""
    raw = _sorted_labels({ex["label"] for ex in (file_rows or task.train)})
    if task.kind == "regression":
        for ex in task.train + task.dev:
            try:
                score = float(ex["label"])
            except ValueError as err:
                point = " (write decimals with a point: 3.8)" if "," in ex["label"] else ""
                raise DataError(f"{ex['_where']}: label '{ex['label']}' is not a number{point} (regression "
                                "task).") from err
            if not math.isfinite(score):
                raise DataError(f"{ex['_where']}: label '{ex['label']}' is not a finite number (regression task); "
                                "give this row its score or remove it.")
            ex["label"] = score
        return
    names = list(given) if given else raw
    if len(names) < 2:
        raise DataError(f"{path}: every training row has the label {names[0]!r}; a classifier needs at least two "
                        "labels. Check the label column (--label-column), or set --task-kind regression for a "
                        "numeric score.")
    for ex in task.train + task.dev if given else task.dev:
        if ex["label"] not in names:
            known, fix = (("the adapter's labels", "it scores only those: remove this row or retrain with it") if given
                          else ("the training data", "add training rows with it, or remove this row"))
            raise DataError(f"{ex['_where']}: label '{ex['label']}' never appears in {known} ({names}); {fix}.")
    for ex in task.train + task.dev:
        ex["label"] = names.index(ex["label"])
    task.label_names = names
    has_pair = "text2" in task.train[0]
    task.prompt_template = ("Text: {text}\nSecond text: {text2}\n" if has_pair else "Text: {text}\n") + \
        f"Label ({' or '.join(names)}):"
    task.label_words = [f" {n}" for n in names]


def _apply_prompt(task: Task, cfg: TaskConfig, path: Path) -> None:
    """The user's own prompt and label words, checked against the file: every placeholder known, the second text
    read when the file has one (a dropped {text2} would train on half of each pair without a word), one word a
    label."""
    if cfg.prompt_template is not None:
        wanted = {"text", "text2"} if task.is_pair else {"text"}
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(cfg.prompt_template) if f is not None}
        except ValueError as err:
            raise ConfigError(f"--prompt-template {cfg.prompt_template!r}: {err} (write a literal brace as {{{{ or "
                              "}}}}).") from err
        if fields - wanted or not wanted <= fields:
            pair = "a sentence pair (text2)" if task.is_pair else "single texts (no text2)"
            raise ConfigError(f"--prompt-template {cfg.prompt_template!r}: {path.name} holds {pair}, so the "
                              f"prompt must use exactly "
                              f"{', '.join('{' + f + '}' for f in sorted(wanted))}; it has "
                              f"{', '.join('{' + f + '}' for f in sorted(fields)) or 'no placeholder'}.")
        task.prompt_template = cfg.prompt_template
    if cfg.label_words is not None:
        if task.kind != "classification":
            raise ConfigError(f"--label-words: {path.name} is a regression file; label words are for classification.")
        if len(cfg.label_words) != len(task.label_names) or not all(w.strip() for w in cfg.label_words):
            raise ConfigError(f"--label-words {','.join(cfg.label_words)}: {path.name} has {len(task.label_names)} "
                              f"labels ({', '.join(task.label_names)}, in this order); give one non-empty word for "
                              "each.")
        task.label_words = [w if w[:1].isspace() else f" {w}" for w in cfg.label_words]


# --- entry point ----------------------------------------------------------------------------------

BUILTIN = {
    **{name: (lambda n=name: _glue_task(n)) for name in GLUE},
    "dolly": _dolly_task,
    "gsm8k": _gsm8k_task,
    "wikitext2": _wikitext_task,
    "shakespeare": _shakespeare_task,
}
TASK_NAMES = sorted(BUILTIN)
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "dolly15k": "dolly", "wikitext-2": "wikitext2", "tinyshakespeare": "shakespeare"}


def _subset(examples: list[dict], n: Optional[int], seed: int) -> list[dict]:
    if n is None or n >= len(examples):
        return examples
    idx = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


SIZE_KEYS = ("train_samples", "dev_samples", "max_length", "seed")


def size_notes(task: Task) -> list[str]:
    """One line per size asked for beyond what the task holds (all of its rows are used then), so that a run on
    fewer rows than asked says so instead of only showing it in metrics.json; and one when a regression's dev rows
    all hold one score (a small file's 10% split can be one row), whose Pearson would read 0 however it trained."""
    notes = []
    for key, rows in (("train_samples", task.train), ("dev_samples", task.dev)):
        asked = getattr(task.config, key, None) if task.config is not None else None
        if asked and asked > len(rows):
            notes.append(f"--{key.replace('_', '-')} {asked}: {task.name} has {len(rows)} {key.split('_')[0]} rows, "
                         f"so all {len(rows)} are used")
    if task.kind == "regression" and task.dev and len({ex["label"] for ex in task.dev}) < 2:
        notes.append(f"all {len(task.dev)} dev row(s) of {task.name} have the score {task.dev[0]['label']:g}, so "
                     "Pearson and Spearman are undefined and read 0; give dev rows of varied scores (--dev-file)")
    return notes


def task_config(ref: str | dict, **sizes) -> TaskConfig:
    """A TaskConfig from a task reference: a bundled task's name (or a file path), or the TaskConfig keys of a
    user's own data (how an adapter's note records them, its sizes left out), with the sizes given here."""
    keys = {"name": ref} if isinstance(ref, str) else {k: v for k, v in ref.items() if k not in SIZE_KEYS}
    return TaskConfig(**keys, **sizes)


def task_label(ref: str | dict) -> str:
    """How a task reference is named in messages."""
    return ref if isinstance(ref, str) else str(ref.get("data_file") or ref.get("name"))


# How to read a user's own file: a bundled task has its own dev split, columns, labels and prompt, so any of these
# set away from its default on a bundled task would be ignored without a word (the key, and its CLI option if any).
OWN_DATA_KEYS = {"dev_file": "--dev-file", "kind": "--task-kind", "text_column": "--text-column",
                 "text2_column": "--text2-column", "label_column": "--label-column",
                 "instruction_column": "--instruction-column", "input_column": "--input-column",
                 "response_column": "--response-column", "prompt_template": "--prompt-template",
                 "label_words": "--label-words", "label_names": None, "dev_fraction": None}


def own_data_keys_given(cfg: TaskConfig) -> tuple[str, str]:
    """The keys of `cfg` set away from their defaults that read a user's own file, named with their CLI options
    ('' when none), and the verb for them ('is'/'are'): finetune's and federate's refusals of them on a bundled task."""
    given = [k for k in OWN_DATA_KEYS if getattr(cfg, k) != TaskConfig.model_fields[k].default]
    names = ", ".join(f"{k} ({OWN_DATA_KEYS[k]})" if OWN_DATA_KEYS[k] else k for k in given)
    return names, "is" if len(given) == 1 else "are"


def _refuse_own_data_keys(cfg: TaskConfig) -> None:
    """A bundled task given keys that read a user's file: an error naming them (the defaults pass)."""
    names, verb = own_data_keys_given(cfg)
    if names:
        raise ConfigError(f"task '{cfg.name}': {names} {verb} for your own data "
                          "file; a bundled task has its own prompt, label words, columns and dev split. Use "
                          "--data-file FILE (task.data_file in a config file) for your own data.")


def load_task(cfg: TaskConfig | str, **overrides) -> Task:
    """Load a task by name or file path, then subset train/dev deterministically by seed."""
    if isinstance(cfg, str):
        cfg = TaskConfig(name=cfg, **overrides)
    key = ALIASES.get(cfg.name.lower(), cfg.name.lower())
    if cfg.data_file is None and key in BUILTIN:
        _refuse_own_data_keys(cfg)
        task = BUILTIN[key]()
    elif cfg.data_file is not None or Path(cfg.name).suffix:
        task = _custom_task(cfg)
    else:
        raise ConfigError(f"unknown task '{cfg.name}'. Choose one of {', '.join(TASK_NAMES)}, "
                          "or give a .jsonl/.csv/.tsv file of your own (see README: 'Your own data').")
    task.train = _subset(task.train, cfg.train_samples, cfg.seed)
    task.dev = _subset(task.dev, cfg.dev_samples, cfg.seed + 1)
    task.config = cfg
    return task
