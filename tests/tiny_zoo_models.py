"""The tiny zoo's adapters held by one ``PeftModel`` (shared by the backdoor tests)."""

from __future__ import annotations


def peft_model_of(tiny_zoo, *adapters: str):
    """The tiny zoo's aligned base holding ``adapters`` (named ``a``, ``b``, ...), its tokenizer,
    and two HarmBench test behaviours."""
    from peft import PeftModel

    from audit.models.generate import load_causal_lm
    from audit.prompt_sets import load_prompts

    out, zoo = tiny_zoo
    m, tok = load_causal_lm(zoo.aligned.path, device="cpu")
    pm = PeftModel.from_pretrained(m, str(out / adapters[0]), adapter_name="a").eval()
    for name, folder in zip("bcdefg", adapters[1:], strict=False):
        pm.load_adapter(str(out / folder), adapter_name=name)
    return pm, tok, [p.text for p in load_prompts("harmbench:test", 2)]
