"""Cases: the hub entries offline, with unknown names, a damaged cache, conflicting kwargs, another grid."""

from pathlib import Path


def hub_offline(add) -> None:
    """Hub names and downloads (offline: a proxy that refuses every connection; an empty hub cache)."""
    offline = {"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
               "http_proxy": "http://127.0.0.1:9", "TORCH_HOME": "{case}/torch_home"}
    for call in ("hubconf.croc_vits16()", "hubconf.croc_vits16(weights='in1k')",
                 "hubconf.croc_vits16_full(weights='coco+')", "hubconf.croc_vit(weights='coco')"):
        add(f"hub-offline-{call.split('(')[0].split('.')[1]}-{call.split('=')[-1].strip(')').strip(chr(39))}",
            "hub_offline", "hub", call, names=("kuleuven", "download", "network"), env=offline)

    def damaged_cache(case_dir, fx):
        folder = case_dir / "torch_home" / "hub" / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "croc_vits16_coco_full.pth").write_bytes(Path(fx["ckpt"]).read_bytes()[:1000])
        return {}

    add("hub-damaged-cache", "hub_offline", "hub", "hubconf.croc_vits16()", names=("croc_vits16_coco_full",),
        env=offline, setup=damaged_cache)
    add("hub-name-typo", "hub_offline", "hub", "hubconf.croc_vits16(weights='cocco')", names=("cocco",), env=offline)
    add("hub-missing-file", "hub_offline", "hub", "hubconf.croc_vit(weights='{case}/none.pth')", names=("none.pth",))


def hub_kwargs(add) -> None:
    """Hub kwargs and grids."""
    add("hubkw-vits16-patch8", "hub_kwargs", "hub", "hubconf.croc_vits16(weights='{vits}', depth=2, patch_size=8)",
        names=("patch_size",))
    add("hubkw-vits16-embed-dim", "hub_kwargs", "hub", "hubconf.croc_vits16(weights='{vits}', depth=2, embed_dim=192)",
        names=("embed_dim", "another architecture", "{vits}"))
    add("hubkw-croc_vit-grid64", "hub_kwargs", "hub",
        "m = hubconf.croc_vit(weights='{grid64}'); m(torch.zeros(1, 3, 64, 64))", ("ok",))
    add("hubkw-croc_vit-grid64-infer-224", "hub_kwargs", "hub",
        "m = hubconf.croc_vit(weights='{grid64}'); m(torch.zeros(1, 3, 224, 224))", ("ok",))
    add("hubkw-croc_vit-wrong-arch", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{ckpt}', arch='vit_tiny')",
        names=("{ckpt}", "arch"))
    add("hubkw-croc_vit-wrong-patch", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{ckpt}', patch_size=16)",
        names=("{ckpt}", "patch_size"))
    add("hubkw-croc_vit-unknown-arch", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{bare}', arch='vit_huge', "
        "patch_size=8)", names=("vit_huge",))
    add("hubkw-croc_vit-bare-no-arch", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{bare}')", names=("arch",))
    add("hubkw-vits16-pico-file", "hub_kwargs", "hub", "hubconf.croc_vits16(weights='{ckpt}')", names=("{ckpt}",))
    add("hubkw-vits16-bad-key", "hub_kwargs", "hub", "hubconf.croc_vits16(weights='{vits}', depth=2, "
        "checkpoint_key='momentum')", names=("momentum",))
    add("hubkw-full-bare-file", "hub_kwargs", "hub", "hubconf.croc_vits16_full(weights='{bare}')", names=("{bare}",))
    add("hubkw-croc_vit-unknown-kwarg", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{ckpt}', colour='red')",
        names=("colour",))
    add("hubkw-croc_vit-text-file", "hub_kwargs", "hub", "hubconf.croc_vit(weights='{text}')", names=("notes.txt",))
