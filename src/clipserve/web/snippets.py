"""Copy-paste snippets for the model page, with the base URL the browser used filled in."""

from __future__ import annotations

from clipserve.model_card import HUB_ID


def snippets(base_url: str) -> dict[str, str]:
    """curl, Python openai, JS openai and LangChain, each calling this server's /v1/embeddings."""
    api = f"{base_url}/v1"
    return {
        "curl": (
            f"curl {api}/embeddings \\\n"
            '  -H "Authorization: Bearer $CLIPSERVE_API_KEY" \\\n'
            '  -H "Content-Type: application/json" \\\n'
            f'  -d \'{{"model": "{HUB_ID}", "input": ["a photo of a cat", "https://example.com/cat.jpg"]}}\''
        ),
        "python": (
            "import os\nfrom openai import OpenAI\n\n"
            f'client = OpenAI(base_url="{api}", api_key=os.environ["CLIPSERVE_API_KEY"])\n'
            "result = client.embeddings.create(\n"
            f'    model="{HUB_ID}",\n'
            '    input=["a photo of a cat", {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}],\n'
            ")\nprint(len(result.data[0].embedding))  # 512"
        ),
        "js": (
            'import OpenAI from "openai";\n\n'
            f'const client = new OpenAI({{ baseURL: "{api}", apiKey: process.env.CLIPSERVE_API_KEY }});\n'
            "const result = await client.embeddings.create({\n"
            f'  model: "{HUB_ID}",\n'
            '  input: ["a photo of a cat", { type: "image_url", image_url: { url: "https://example.com/cat.jpg" } }],\n'
            "});\nconsole.log(result.data[0].embedding.length); // 512"
        ),
        "langchain": (
            "import os\nfrom langchain_openai import OpenAIEmbeddings\n\n"
            "embeddings = OpenAIEmbeddings(\n"
            f'    model="{HUB_ID}",\n'
            f'    base_url="{api}",\n'
            '    api_key=os.environ["CLIPSERVE_API_KEY"],\n'
            "    check_embedding_ctx_length=False,  # send text, not tiktoken ids\n"
            ")\n"
            'vectors = embeddings.embed_documents(["a photo of a cat", "a dog on a sofa"])'
        ),
    }
