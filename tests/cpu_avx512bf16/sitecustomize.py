"""On PYTHONPATH, makes bitsandbytes believe this CPU has AVX512-BF16, as CI's and many users' CPUs do. bitsandbytes then
takes the branch it takes there when it is imported (peft imports it; sentence-transformers imports peft through
transformers): it asks the `kernels` package for a hub kernel, and `kernels` logs about its trust check under
HF_HUB_OFFLINE=1. Without this, a machine whose CPU lacks the instructions never runs that branch and cannot see its noise."""
import importlib.abc, importlib.util, sys

class _SayAvx512bf16(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != 'bitsandbytes.functional': return None
        sys.meta_path.remove(self)
        try: spec = importlib.util.find_spec(name)
        finally: sys.meta_path.insert(0, self)
        if spec is None: return None
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.has_avx512bf16 = lambda: True
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _SayAvx512bf16())
