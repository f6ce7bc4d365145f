"""The findings the rules rest on, each with the scale it was measured at; each rule cites these ids (see
../../docs and the seed). The project's own measurements (benchmarks/STUDY.md) are an entry too, read from what the
study's report wrote (study_evidence.py), so advice can say which evidence is nearest the user's model
(advise/scale.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Evidence:
    id: str
    source: str
    finding: str
    scale: str = "not tied to one model size"  # the models and setting it was measured at, in words
    params: tuple[float, ...] = ()  # the model sizes it was measured at (parameters); () = no size


EVIDENCE: dict[str, Evidence] = {e.id: e for e in [
    Evidence("anyscale-2023", "Anyscale, 'Fine-tuning Llama 2: LoRA vs full parameter' (2023), Llama 2 7B/13B/70B",
             "Representation tasks (ViGGO structured output): LoRA 95% vs full 97%; SQL generation: about equal; "
             "GSM8k math: LoRA clearly behind at 7B and 13B. lr 1e-4 was unstable for LoRA, 3e-5 stabilised it.",
             "Llama 2 7B / 13B / 70B, GPU, full-size datasets", (7e9, 13e9, 70e9)),
    Evidence("intruders-2024", "Shuttleworth et al., 'LoRA vs Full Fine-tuning: An Illusion of Equivalence' "
             "(NeurIPS 2024, arXiv 2410.21228)",
             "LoRA creates intruder dimensions (new high-ranking singular vectors) that correlate with forgetting; "
             "they accumulate in sequential / continual fine-tuning, where every LoRA rank degrades earlier tasks "
             "faster than full fine-tuning. alpha = 2r gives fewer intruders than a fixed small alpha.",
             # the sizes let advise place our 135M continual measurement (claim 7) against it
             "RoBERTa-base (125M) on six classification tasks, and LLaMA / LLaMA-2 7B, GPU", (125e6, 7e9)),
    Evidence("biderman-2024", "Biderman et al., 'LoRA Learns Less and Forgets Less' (arXiv 2405.09673)",
             "On code and math, LoRA trails full fine-tuning (GSM8K IFT: r=256 0.634 vs full 0.642; continued "
             "pre-training 0.203 vs 0.293) but forgets less; full-FT updates are 10-100x higher rank. "
             "Use all modules and alpha = 2r.", "Llama 2 7B, GPU, billions of training tokens", (7e9,)),
    Evidence("qlora-2023", "Dettmers et al., 'QLoRA' (arXiv 2305.14314)",
             "NF4 + double quantisation (4.127 bits/param) keeps accuracy close to 16-bit LoRA; a 65B model trains "
             "in < 48 GB. LoRA dropout 0.1 for models up to 13B, 0.05 above."),
    Evidence("raschka-2023", "S. Raschka, 'Practical tips for finetuning LLMs using LoRA' (2023), Llama 2 7B",
             "QLoRA: 33% less memory (21.33 -> 14.18 GB) for ~39-50% longer training (6,686 s -> 10,060 s). "
             "LoRA on all linear layers beats attention-only; training loss falling below ~0.2 marks overfitting; "
             "more than 3 epochs on a static set can hurt."),
    Evidence("lima-2023", "Zhou et al., 'LIMA: Less Is More for Alignment' (2023)",
             "1,000 curated examples fine-tuned LLaMA-65B to outputs preferred or equal to GPT-4's in 43% of "
             "cases: quality beats quantity (the seed: 1,000 curated can beat 50,000 noisy).",
             "LLaMA-65B, 1,000 curated prompt-response pairs", (65e9,)),
    Evidence("seed", "The LoRA decision framework (the seed, 'Making the call')",
             "Start with LoRA; graduate to full fine-tuning if gaps remain on reasoning-heavy tasks after tuning. "
             "LoRA for swappable task adapters and fast iteration; full for long-term, train-once deployments."),
    Evidence("hu-2021", "Hu et al., 'LoRA: Low-Rank Adaptation of Large Language Models' (2021)",
             "Trains r * (d_in + d_out) parameters per adapted matrix; adapters are small files swapped at runtime "
             "on one frozen base."),
]}


def _study() -> Evidence:
    """The study's entry, from the file the study's report writes (advise/study_evidence.py)."""
    from tunewise.advise.study_evidence import study_evidence

    e = study_evidence()
    return Evidence(e.id, e.source, e.finding, e.scale, e.params)


EVIDENCE[_study().id] = _study()


def cite(ids: tuple[str, ...] | list[str]) -> list[dict]:
    return [{"id": i, "source": EVIDENCE[i].source, "finding": EVIDENCE[i].finding, "scale": EVIDENCE[i].scale,
             "params": list(EVIDENCE[i].params)} for i in ids]
