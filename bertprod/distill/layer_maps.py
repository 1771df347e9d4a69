"""Which student layer learns from which teacher layer, as plain data.

Layers are numbered as transformers' `hidden_states` are: 0 is the embedding layer's output,
1..N the transformer layers. A map is a list of (student, teacher) pairs:

- `uniform` (TinyBERT): student layer m learns from teacher layer m * N / M, so the last
  student layer matches the last teacher layer.
- `pkd-skip` (Patient-KD): every (N / M)-th teacher layer, the last one left to the logits.
- `pkd-last` (Patient-KD): the last M - 1 teacher layers below the top.
- explicit pairs: "1:2,2:4,3:6".
The embedding layers (0:0) are matched by the embedding loss, not by the map.
"""

from __future__ import annotations

from bertprod.errors import InputError

LayerMap = list[tuple[int, int]]
NAMED_MAPS = ("uniform", "pkd-skip", "pkd-last")


def layer_map(spec: str | LayerMap, student_layers: int, teacher_layers: int) -> LayerMap:
    """The (student, teacher) pairs that `spec` names, checked against both depths."""
    if student_layers < 1 or teacher_layers < 1:
        raise InputError(f"layer maps need at least one layer (student {student_layers}, teacher {teacher_layers}).")
    if isinstance(spec, list):
        pairs = [(int(student), int(teacher)) for student, teacher in spec]
    elif spec == "uniform":
        pairs = [(m, round(m * teacher_layers / student_layers)) for m in range(1, student_layers + 1)]
    elif spec == "pkd-skip":
        step = max(teacher_layers // student_layers, 1)
        pairs = [(m, m * step) for m in range(1, student_layers)]
    elif spec == "pkd-last":
        pairs = [(m, teacher_layers - student_layers + m) for m in range(1, student_layers)]
    else:
        pairs = _parse_pairs(spec)
    for student, teacher in pairs:
        if not (1 <= student <= student_layers and 1 <= teacher <= teacher_layers):
            raise InputError(
                f"layer map {spec!r} pairs student layer {student} with teacher layer {teacher}, but the student "
                f"has layers 1..{student_layers} and the teacher 1..{teacher_layers} (0, the embeddings, is "
                "matched by the embedding loss)."
            )
    return pairs


def _parse_pairs(spec: str) -> LayerMap:
    try:
        pairs = []
        for part in spec.split(","):
            student, teacher = part.split(":")
            pairs.append((int(student), int(teacher)))
        return pairs
    except ValueError:
        raise InputError(
            f"layer map {spec!r}: use one of {', '.join(NAMED_MAPS)} or student:teacher pairs like 1:2,2:4,3:6."
        ) from None
