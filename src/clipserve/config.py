"""The one Settings object: built once at start from CLI flags and CLIPSERVE_* environment variables."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clipserve.model_card import DEFAULT_WEIGHTS


def default_data_dir() -> Path:
    """The per-user data directory (e.g. ~/.local/share/clipserve on Linux)."""
    return Path(platformdirs.user_data_dir("clipserve", appauthor=False))


class Settings(BaseSettings):
    """Every knob of the service. CLI flags override environment variables, which override defaults."""

    # allow_inf_nan=False: no setting means "forever" by inf; a nan or inf is a one-line error at start, not a
    # traceback (or an overflow per request) later. Upper bounds below (protocol edge, issue 10) likewise.
    model_config = SettingsConfigDict(
        env_prefix="CLIPSERVE_", extra="forbid", validate_default=True, allow_inf_nan=False
    )

    # where state and weights come from
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory that holds every piece of state (model cache, databases, indexes).",
    )
    weights: str = Field(
        default=DEFAULT_WEIGHTS,
        description=(
            "Weights source: 'hf-hub:ORG/REPO' (open_clip hub loading, safetensors first), a local open_clip "
            "checkpoint (.safetensors/.bin), a transformers CLIPModel directory or model.safetensors, "
            "or 'random' (seeded random init, for offline development only)."
        ),
    )
    model_cache_dir: Path | None = Field(
        default=None, description="Where hub downloads are cached (default: DATA_DIR/models)."
    )
    random_seed: int = Field(default=0, description="Seed for --weights random.")
    architecture: str = Field(
        default="ViT-B-32",
        description=(
            "open_clip architecture (or a path to an open_clip model-config JSON) for local open_clip "
            "checkpoints and random init; the served model is ViT-B-32."
        ),
    )

    # compute
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the model runs: auto uses CUDA when present."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="Intra-op threads for the model (default: all cores)."
    )
    precision: Literal["auto", "fp32", "bf16", "int8"] = Field(
        default="fp32",
        description="fp32 (the reference's numbers), bf16, int8 (CPU: dynamic quantization of the Linear "
        "layers), or auto: bf16 on CUDA or a CPU with AMX/AVX512-BF16, else fp32.",
    )
    truncate_text: bool = Field(
        default=True,
        description="Run the text tower only to each batch's longest prompt: the same embeddings (causal "
        "mask), several times faster for short prompts. --no-truncate-text runs all 77 positions.",
    )
    jpeg_draft: bool = Field(
        default=True,
        description="Decode JPEGs much larger than needed at 1/2-1/8 scale in the DCT domain (at least 448 px "
        "on the short side, twice the model's 224), much faster for camera photos; --no-jpeg-draft decodes "
        "at full size, exactly as the reference pipeline.",
    )
    decode_workers: int = Field(
        default_factory=lambda: max(1, (os.cpu_count() or 2) // 2),
        ge=1,
        description="Threads that decode and preprocess images (default: half the cores; measured best on 2 "
        "cores, where more threads fight the model for the CPU).",
    )

    # batching
    image_batch_size: int = Field(default=32, ge=1, description="Largest image batch sent to the model.")
    text_batch_size: int = Field(default=64, ge=1, description="Largest text batch sent to the model.")
    batch_wait_ms: float = Field(
        default=5.0, ge=0, le=60_000, description="How long a batch waits for more items before it runs."
    )
    batch_latency_target_ms: float = Field(
        default=250.0,
        ge=0,
        le=60_000,
        description="A batch takes only as many items as the model runs in about this time (measured as it "
        "runs), so another account's request waits for at most two such batches; 0: always full batches. On a "
        "2-core CPU, ViT-B-32 runs ~4 images in 250 ms at the same cost per image as 32; on a GPU batches stay "
        "full.",
    )
    freeze_startup_heap: bool = Field(
        default=True,
        description="Once warm, exempt the objects loaded at startup (model, vocabulary, libraries) from the "
        "garbage collector's full scans, which otherwise stall every request ~240 ms whenever traffic has "
        "allocated enough (--no-freeze-startup-heap: leave the collector as Python sets it).",
    )
    contended_batch_latency_target_ms: float = Field(
        default=100.0,
        ge=0,
        le=60_000,
        description="While more than one account has sent work within contention_window_s, a batch takes only "
        "what the model runs in about this time (at least one item), so a request arriving while another "
        "account's batch runs waits for one short batch. On a 2-core CPU that is one ViT-B-32 image (the "
        "busy account then runs at ~0.6x its solo throughput); on a GPU batches stay full. 0: no tighter target.",
    )
    contention_window_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="How recently a second account must have sent work for batches to use "
        "contended_batch_latency_target_ms.",
    )
    max_queue_items: int = Field(
        default=4096,
        ge=1,
        description="Items admitted per queue (images, texts) before new requests get 503 + Retry-After.",
    )
    max_queue_items_per_account: int | None = Field(
        default=None,
        ge=1,
        description="Items one account may hold in each queue across all its requests (503 + Retry-After "
        "beyond). Default: half of max_queue_items but at least max_items_per_request, so one account can "
        "never fill a queue for everyone.",
    )

    # request limits
    max_items_per_request: int = Field(default=2048, ge=1, description="Inputs per request (OpenAI: 2048).")
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Largest request body.")
    max_text_chars: int = Field(
        default=20_000,
        ge=1,
        description="Longest input text (CLIP reads 77 tokens; longer text is truncated).",
    )
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="Largest encoded image.")
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest decoded image (width*height); more is a 400."
    )
    # images (issue 10): preprocessing resizes the short side to 224 first, so its cost grows with the ratio
    max_image_aspect_ratio: float = Field(
        default=20.0,
        ge=1.0,
        allow_inf_nan=False,
        description="Longest side / shortest side of an image; more is a 400 (the model sees the centre "
        "square only, and the resize before the crop grows with the ratio).",
    )

    # classification and ranking
    max_labels: int = Field(default=1000, ge=2, description="Labels per /v1/classify request.")
    max_prompts_per_request: int = Field(
        default=16_384,
        ge=1,
        description="Labels x templates per /v1/classify request (bounds text-encoder work).",
    )
    max_classify_images: int = Field(default=64, ge=1, description="Images per /v1/classify request.")
    max_rank_documents: int = Field(default=1000, ge=1, description="Documents per /v1/rank request.")
    prompt_cache_size: int = Field(
        default=50_000, ge=0, description="Prompt embeddings kept in the LRU cache (about 2 KiB each)."
    )
    # text, tokenization and prompts (issue 10): CLIP reads 77 tokens, so work and memory per text are bounded
    prompt_cache_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=0,
        description="Bytes the prompt cache may hold (prompt strings + embeddings); the LRU evicts beyond it.",
    )
    tokenizer_cache_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=0,
        description="Bytes the tokenizer's word cache may hold (open_clip's own cache grows with every new "
        "word, forever).",
    )
    max_label_chars: int = Field(
        default=300,
        ge=1,
        description="Longest classification label or template, in characters (a prompt reaches the model "
        "as 77 tokens at most; longer labels only cost tokenization and cache memory).",
    )

    # image URLs
    image_fetch_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="Total time to fetch one image URL."
    )
    image_fetch_max_redirects: int = Field(default=3, ge=0, description="Redirects followed per image URL.")
    # fair sharing of fetches and queues (issue 10): no account may take the whole pool or queue
    image_fetch_concurrency: int = Field(
        default=8,
        ge=1,
        description="Image URLs one account fetches at once, across all its requests (less than "
        "--image-fetch-max-connections, so one account never holds the whole pool).",
    )
    image_fetch_max_connections: int = Field(
        default=64,
        ge=2,
        description="Image URL connections open at once for the whole server, shared round-robin between "
        "accounts.",
    )
    image_decode_ahead: int = Field(
        default=128,
        ge=1,
        description="Decoded images held ahead of the model (602 KB each at 224 px) for the whole server, "
        "handed out round-robin between accounts; images beyond it wait undecoded.",
    )
    max_queue_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Bytes the image queue may hold (encoded images admitted or fetched, decoded images "
        "waiting for the model) before new requests get 503 + Retry-After.",
    )
    max_queue_bytes_per_account: int | None = Field(
        default=None,
        ge=1024 * 1024,
        description="Bytes one account may hold in the image queue across all its requests (503 + Retry-After "
        "beyond). Default: half of max_queue_bytes but at least max_request_bytes.",
    )
    image_fetch_allow_private: bool = Field(
        default=False,
        description="Allow image URLs that resolve to private, loopback, link-local or metadata addresses.",
    )
    image_fetch_allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDR networks allowed even though they are not public (e.g. an internal image host).",
    )

    # accounts, keys, prices and limits
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the accounts and ledger database, e.g. postgresql://user:pass@host/db "
        "for several replicas sharing one ledger (default: SQLite at DATA_DIR/clipserve.db).",
    )
    auth: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="API keys: on (always required), off (nobody is checked or charged), or auto: required "
        "as soon as any key exists, off until then.",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve with authentication off on a non-loopback address (refused without this flag).",
    )
    price_per_1k_images: Decimal = Field(
        default=Decimal("0.047"), ge=0, le=1_000_000, description="Dollars per 1,000 images encoded."
    )
    price_per_1m_tokens: Decimal = Field(
        default=Decimal("0.01"), ge=0, le=1_000_000, description="Dollars per 1,000,000 text tokens encoded."
    )
    charge_cached_prompts: bool = Field(
        default=True,
        description="Charge classification prompts served from the prompt cache at list price "
        "(--no-charge-cached-prompts: only prompts actually encoded are charged).",
    )
    rate_limit_requests_per_minute: int = Field(
        default=600,
        ge=0,
        le=1_000_000,
        description="Requests per minute per key unless the key sets its own (0: none).",
    )
    rate_limit_images_per_minute: int = Field(
        default=12_000,
        ge=0,
        le=1_000_000,
        description="Images per minute per key unless the key sets its own (0: none).",
    )
    rate_limit_burst_requests: int = Field(
        default=60,
        ge=0,
        le=1_000_000,
        description="Requests a key may send at once; beyond, its per-minute rate paces it (a token bucket per "
        "key and process, refilled at the per-minute rate), so a minute's allowance cannot all arrive in a few "
        "seconds and take the CPU from other accounts. 0: no pacing (only the minute window).",
    )
    rate_limit_burst_images: int = Field(
        default=2048,
        ge=0,
        le=1_000_000,
        description="Images a key may send at once before its per-minute image rate paces it (a larger "
        "request waits for a full bucket). 0: no pacing.",
    )
    rate_limited_answer_delay_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="A key already known to be over its request rate gets its 429 after this many seconds (a "
        "tarpit: a flood on a few connections slows to their pace, at the cost of a sleeping coroutine; "
        "clients wait for Retry-After anyway). 0: at once.",
    )
    max_delayed_rate_limited_answers: int = Field(
        default=256,
        ge=0,
        le=100_000,
        description="Refusals delayed at once; beyond, 429s are answered at once (each still costs no database "
        "work).",
    )
    signup_enabled: bool = Field(
        default=False, description="Open sign-up: POST /v1/signup hands out a key with the free credit."
    )
    signup_credit: Decimal = Field(
        default=Decimal("1.00"), ge=0, le=1_000_000, description="Dollars of free credit per sign-up."
    )
    signups_per_address_per_day: int = Field(
        default=3, ge=1, description="Sign-ups allowed per client address in 24 hours."
    )
    # accounts and sign-up (issue 10): who the client is, when a proxy is in front
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR networks of reverse proxies whose X-Forwarded-For names the client "
        "(default: none, so the connecting address is the client; a spoofed header changes nothing).",
    )
    signup_ipv6_prefix: int = Field(
        default=64,
        ge=16,
        le=128,
        description="IPv6 sign-ups are counted per network of this prefix length (one subscriber usually "
        "holds a whole /64, or more).",
    )
    signup_ipv4_prefix: int = Field(
        default=32, ge=8, le=32, description="IPv4 sign-ups are counted per network of this prefix length."
    )
    credit_hold_s: float = Field(
        default=900.0,
        gt=0,
        le=30 * 86_400,
        description="How long credit reserved by an unfinished request stays reserved (frees a crashed "
        "replica's reservations).",
    )
    idempotency_ttl_s: float = Field(
        default=86_400.0,
        gt=0,
        le=366 * 86_400,
        description="How long answers are kept for replay by Idempotency-Key.",
    )

    # collections
    vector_url: str | None = Field(
        default=None,
        description="Milvus for collections: http://host:19530 (a server or cluster, shared by replicas) or a "
        "local *.db path (Milvus Lite). Default: the embedded store (rows in the accounts database, searched "
        "in memory).",
    )
    vector_token: str | None = Field(default=None, description="Milvus token (user:password or API key).")
    max_collection_items_per_request: int = Field(
        default=256, ge=1, description="Items per POST /v1/collections/{name}/items."
    )
    max_metadata_bytes: int = Field(default=16_384, ge=2, description="Largest metadata object of an item.")
    exact_search_max_items: int = Field(
        default=100_000,
        ge=1_000,
        description="Embedded store: exact search up to this many items in a collection, an IVF index beyond.",
    )
    # collections: quotas and shapes (issue 10; docs/security.md, section collections)
    max_metadata_depth: int = Field(
        default=16,
        ge=1,
        le=32,
        description="Deepest nesting of an item's metadata (the object itself is 1); deeper items are refused.",
    )
    max_collections_per_account: int = Field(
        default=100,
        ge=1,
        description="Collections one account (or the local user, without auth) may hold; creating costs nothing.",
    )
    max_collection_items_per_account: int = Field(
        default=100_000,
        ge=1,
        description="Items stored across all of one account's collections (each up to 2 KiB of vector plus "
        "its id and metadata); adds beyond it are refused.",
    )

    # custom classifiers (issue 15): linear probes trained through /v1/classifiers (docs/classifiers.md)
    classifier_max_labels: int = Field(
        default=100,
        ge=2,
        le=10_000,
        description="Labels per classifier: the weights are labels x 512 floats, and training time grows with "
        "them.",
    )
    classifier_max_examples: int = Field(
        default=2000,
        ge=1,
        le=1_000_000,
        description="Examples one classifier holds (all adds together): every add retrains on all of them, so "
        "this bounds one training's CPU.",
    )
    classifiers_per_account: int = Field(
        default=100,
        ge=1,
        description="Classifiers one account (or the local user, without auth) may hold; a 400 beyond, as "
        "for collections.",
    )
    classifier_default_c: float = Field(
        default=10.0,
        gt=0,
        le=1e6,
        description="Inverse regularisation strength used when too few examples per label (< 2) allow "
        "choosing it by cross-validation, or the training is beyond classifier_cv_max_work.",
    )
    classifier_cv_max_work: int = Field(
        default=20_000,
        ge=0,
        le=10_000_000,
        description="Choose C by cross-validation (31 fits) only while examples x labels is at most this; a "
        "larger training is one fit at classifier_default_c, so its CPU stays bounded even when its examples "
        "are cheap texts.",
    )
    classifier_max_iter: int = Field(
        default=300,
        ge=1,
        le=100_000,
        description="L-BFGS iterations per fit: bounds one training's CPU whatever the examples.",
    )
    classifier_cv_folds: int = Field(
        default=5,
        ge=2,
        le=20,
        description="Most folds of the cross-validation that chooses C (fewer when a label has fewer "
        "examples).",
    )
    classifier_train_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Threads that train classifiers, shared round-robin by account (never the event loop).",
    )
    classifier_trainings_per_account: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="Creates and adds one account may have in progress at once (503 + Retry-After beyond): a "
        "cheap add retrains on every example, so the training queue needs a bound per account.",
    )
    classifier_training_cpu_s_per_minute: float = Field(
        default=20.0,
        ge=0,
        le=1e6,
        description="Classifier training CPU seconds per account per minute (a bucket of that size, refilled "
        "continuously; 0 = unlimited): a one-text add costs a token or two but retrains on every example, so "
        "without it one account could keep the training threads busy; 429 + Retry-After while in debt.",
    )

    # HTTP server
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind.")
    graceful_shutdown_s: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="On SIGTERM, how long in-flight requests may take to finish.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")

    # request bodies, connections and the event loop (issue 10; docs/security.md, section bodies)
    max_unauthenticated_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest body of a request without a valid API key once keys exist (sign-up; every other "
        "route answers 401 before reading the body).",
    )
    json_inline_parse_bytes: int = Field(
        default=16 * 1024,
        ge=0,
        description="JSON bodies up to this size are parsed and validated on the event loop (a few ms at "
        "worst, for the most deeply nested shapes); "
        "larger ones in a worker thread, in steps that let other requests run.",
    )
    json_parse_workers: int = Field(
        default=2, ge=1, description="Threads that parse and validate large JSON bodies (more queue)."
    )
    max_json_depth: int = Field(
        default=32,
        ge=4,
        le=512,
        description="Deepest nesting of a JSON body (collection item metadata sits 4 levels down).",
    )
    max_json_keys: int = Field(
        default=100_000,
        ge=16,
        description="Object keys in one JSON body (each costs ~100 bytes of memory and parse time).",
    )
    max_json_strings: int = Field(
        default=200_000, ge=16, description="Strings (keys included) in one JSON body."
    )
    max_json_values: int = Field(
        default=500_000,
        ge=16,
        description="Values (numbers, strings, arrays, objects) in one JSON body: 256 items with 512-d "
        "vectors need 131,072.",
    )
    http_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="A connection that has not sent a request's complete headers this long after it opened "
        "(or after the request's first byte) gets 408 and is closed.",
    )
    http_body_idle_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="Longest pause while a request body arrives before the connection is closed.",
    )
    http_body_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=86_400,
        description="Longest time a request body may take to arrive in full (64 MiB needs ~4.5 Mbit/s).",
    )
    http_max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open client connections; beyond it new connections get 503 and are closed at once "
        "(keep it under the process's file-descriptor limit, `ulimit -n`).",
    )
    # browsers (issue 11): CORS, off unless origins are listed
    cors_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose web pages may call the API (CORS), or '*' for any; "
        "default none: CORS off, no Access-Control-* headers (a browser page on another origin is refused).",
    )
    cors_allow_credentials: bool = Field(
        default=False,
        description="Let pages send cookies and HTTP auth cross-origin (API keys in Authorization need no "
        "credentials); never together with the origin '*'.",
    )
    # web pages and sign-in (issue 12): sessions, throttling, password hashing (docs/security.md)
    web_pages_enabled: bool = Field(
        default=True,
        description="Serve the web pages (model page, sign-in, console, playground, admin); off: only the JSON "
        "API.",
    )
    session_idle_s: float = Field(
        default=28_800.0,
        gt=0,
        le=366 * 86_400,
        description="A web session unused this long ends (8 hours): a forgotten browser does not stay signed "
        "in.",
    )
    session_max_age_s: float = Field(
        default=604_800.0,
        gt=0,
        le=366 * 86_400,
        description="A web session ends this long after sign-in whatever its use (7 days): a stolen cookie "
        "works for a bounded time.",
    )
    session_cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="The session cookie's Secure flag: auto sets it when the request came over https (after "
        "trusted-proxy handling), always/never force it.",
    )
    signin_failures_per_account: int = Field(
        default=5,
        ge=1,
        le=10_000,
        description="Failed sign-ins per email within the throttle window before further tries get 429 "
        "(password guessing against one account).",
    )
    signin_failures_per_address: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description="Failed sign-ins per client network within the throttle window before further tries get "
        "429 (guessing across many accounts).",
    )
    signin_throttle_window_s: float = Field(
        default=900.0,
        gt=0,
        le=86_400,
        description="The window over which failed sign-ins are counted (15 minutes).",
    )
    password_min_length: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Shortest password a web sign-up accepts (NIST SP 800-63B's minimum; the longest is 256).",
    )
    password_hash_concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Password hashes (argon2id, 64 MiB each) computed at once, off the event loop.",
    )
    password_hash_queue: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="Sign-ins waiting for a password hash; beyond it 503 with Retry-After: 1 (bounded memory "
        "and latency under a sign-in flood).",
    )
    password_hash_time_cost: int = Field(
        default=3,
        ge=1,
        le=100,
        description="argon2id passes (RFC 9106 low-memory profile: 3); existing hashes are upgraded at the "
        "next sign-in when it changes.",
    )
    password_hash_memory_kib: int = Field(
        default=65_536,
        ge=32,
        le=4_194_304,
        description="argon2id memory per hash in KiB (RFC 9106 low-memory profile: 64 MiB); lower only for "
        "tests or tiny machines.",
    )

    # batch API (issue 13): files and batches (docs/batch.md)
    batch_files_dir: str | None = Field(
        default=None,
        description="Where Batch API files live (default: DATA_DIR/files): a directory, or an fsspec URL such "
        "as s3://bucket/prefix (with that fsspec package installed) that every replica can reach.",
    )
    max_batch_file_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1024,
        le=64 * 1024**3,
        description="Largest file uploaded to /v1/files (OpenAI: 200 MB): bounds the disk one upload takes.",
    )
    max_batch_requests: int = Field(
        default=50_000,
        ge=1,
        le=10_000_000,
        description="Request lines per batch input file (OpenAI: 50,000): bounds one batch's rows and work.",
    )
    batch_file_retention_s: float | None = Field(
        default=30 * 24 * 3600.0,
        gt=0,
        description="How long uploaded and output files are kept before they are deleted (30 days); 0 keeps "
        "them until deleted.",
    )
    batch_window_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        le=7 * 24 * 3600.0,
        description="How long a batch's completion_window '24h' lasts before it expires with partial results.",
    )
    max_batch_storage_bytes_per_account: int = Field(
        default=10 * 1024**3,
        ge=1024,
        description="Bytes of uploaded files one account may hold (400 file_storage_quota_exceeded beyond): "
        "bounds the disk one account takes.",
    )
    max_active_batches_per_account: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Batches one account may have running (in_progress, finalizing, cancelling; 400 "
        "batch_quota_exceeded beyond): bounds one account's lines waiting in the database.",
    )
    max_batch_errors_reported: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Line errors kept on a batch that fails validation (the first ones, by line): bounds "
        "the batch object's size.",
    )

    # batch API execution (issue 13, engineer B): how batch lines run (docs/batch.md)
    batch_discount: Decimal = Field(
        default=Decimal("0.5"),
        ge=0,
        le=1,
        description="Fraction taken off the online price for batch lines (0.5: half price, as OpenAI's Batch "
        "API), the price of work that runs only on idle capacity.",
    )
    batch_lease_s: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="How long a replica's claim on batch lines lasts without renewal (renewed every third of "
        "it while they run): how soon a killed replica's lines are run by another.",
    )
    batch_claim_lines: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Batch lines one claim takes at a time (a replica holds at most a few claims).",
    )
    batch_lines_in_flight: int = Field(
        default=32,
        ge=1,
        le=10_000,
        description="Batch lines a process runs at once: enough to keep the model's batches full; their items "
        "wait in the queues' background lane, behind every online request.",
    )
    batch_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="How often an idle process looks for batch work, expiries and batches to finalize.",
    )
    batch_idle_ms: float = Field(
        default=50.0,
        ge=0,
        le=60_000,
        description="Batch lines reach the model only on idle capacity: no online item queued or decoding, and "
        "this long since the last online batch ended (an online client's next request, one round trip away, "
        "then finds the model free). 0: whenever no online item is queued.",
    )
    batch_yields: bool = Field(
        default=True,
        description="Batch lines run on a model thread of their own and pause between transformer steps "
        "(before every block's attention and MLP) while online work is decoding, queued or running, so an online "
        "request waits for one step of a batch's model call, not all of it. Off: a batch's model call, once "
        "started, runs whole on the online thread.",
    )

    @field_validator("batch_file_retention_s", mode="before")
    @classmethod
    def _zero_retention_keeps_files(cls, value: object) -> object:
        """0 (or an empty value) from a flag or env var means no retention limit (None)."""
        if isinstance(value, str) and value.strip().lower() in ("", "0", "0.0", "none"):
            return None
        return None if value == 0 else value

    @model_validator(mode="after")
    def _queue_holds_a_full_request(self) -> Settings:
        if self.max_queue_items < self.max_items_per_request:
            raise ValueError(
                "max_queue_items must be at least max_items_per_request, or a large request could never run"
            )
        if not self.max_items_per_request <= self.queue_items_per_account <= self.max_queue_items:
            raise ValueError(
                "max_queue_items_per_account must lie between max_items_per_request (or a large request could "
                "never run) and max_queue_items"
            )
        return self

    @model_validator(mode="after")
    def _no_account_holds_every_fetch_or_byte(self) -> Settings:
        if self.image_fetch_concurrency >= self.image_fetch_max_connections:
            raise ValueError(
                "image_fetch_concurrency (per account) must be less than image_fetch_max_connections, "
                "or one account could hold every image connection"
            )
        if self.max_queue_bytes < self.max_request_bytes:
            raise ValueError(
                "max_queue_bytes must be at least max_request_bytes, or a large request could never run"
            )
        if not self.max_request_bytes <= self.queue_bytes_per_account <= self.max_queue_bytes:
            raise ValueError(
                "max_queue_bytes_per_account must lie between max_request_bytes (or a large request could never "
                "run) and max_queue_bytes"
            )
        return self

    @model_validator(mode="after")
    def _trusted_proxies_are_networks(self) -> Settings:
        import ipaddress

        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or CIDR network") from None
        return self

    @model_validator(mode="after")
    def _cors_origins_are_origins(self) -> Settings:
        from urllib.parse import urlsplit

        for origin in self.cors_allowed_origins:
            parts = urlsplit(origin)
            if origin != "*" and (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or origin != f"{parts.scheme}://{parts.netloc}"
            ):
                raise ValueError(
                    f"cors_allowed_origins: {origin!r} is not an origin: write scheme://host[:port], no path or "
                    "trailing slash (e.g. https://app.example.com), or '*'"
                )
        if self.cors_allow_credentials and "*" in self.cors_allowed_origins:
            raise ValueError(
                "cors_allow_credentials cannot be used with cors_allowed_origins '*' (any site could then act "
                "with a visitor's cookies): list the origins instead"
            )
        return self

    @property
    def queue_bytes_per_account(self) -> int:
        if self.max_queue_bytes_per_account is not None:
            return self.max_queue_bytes_per_account
        return max(self.max_request_bytes, self.max_queue_bytes // 2)

    @property
    def queue_items_per_account(self) -> int:
        if self.max_queue_items_per_account is not None:
            return self.max_queue_items_per_account
        return max(self.max_items_per_request, self.max_queue_items // 2)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'clipserve.db'}"

    @property
    def resolved_batch_files_dir(self) -> str:
        """Where Batch API files live: batch_files_dir (a path or an fsspec URL), else DATA_DIR/files."""
        return self.batch_files_dir or str(self.data_dir / "files")

    @property
    def resolved_model_cache_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"
