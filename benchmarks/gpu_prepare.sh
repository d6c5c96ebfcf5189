#!/usr/bin/env bash
# Prepare, on a CPU machine with network, what benchmarks/gpu_check.sh needs on a GPU machine that
# has PyTorch but no network: the project's pure-Python and binary dependencies that image lacks,
# as unpacked cp312 manylinux wheels packed into .gpu/site.tar.xz (about 9 MB: unused imagecodecs
# codecs removed, shared objects stripped), and the test slides in .gpu/data.
# Both paths are git-ignored (.gitignore); carry them to the GPU machine.
#
# Usage: benchmarks/gpu_prepare.sh [SHARED_DATA_DIR]   (default ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
PY=python3
PKGS="dask distributed donfig ftfy google-crc32c imagecodecs locket numcodecs open_clip_torch
openslide-bin openslide-python partd shapely tifffile wcwidth==0.2.13 zarr"
PLAT=""
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux1_x86_64 any; do
    PLAT="$PLAT --platform $p"
done
rm -rf .gpu/wheels .gpu/site && mkdir -p .gpu/wheels .gpu/site .gpu/data
for pkg in $PKGS; do
    # the venv's version when installed here, so the GPU run uses what the tests use
    name=${pkg%%==*}
    ver=$(.venv/bin/pip show "$name" 2>/dev/null | awk '/^Version/{print $2}') || true
    spec=$pkg; [[ $pkg != *==* && -n "$ver" ]] && spec="$name==$ver"
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLAT -d .gpu/wheels "$spec"
done
for w in .gpu/wheels/*.whl; do unzip -q -o "$w" -d .gpu/site; done
# keep the imagecodecs codecs slides use (JPEG, JPEG 2000, deflate, zstd, PNG, WebP, LZ4, LZW)
keep=" _shared _shared_cython _imcd _jpeg8 _jpeg2k _zlib _deflate _zstd _png _webp _lz4 "
for f in .gpu/site/imagecodecs/_*.abi3.so; do
    b=$(basename "$f" .abi3.so); [[ $keep == *" $b "* ]] || rm "$f"
done
need=" libdeflate libjpeg liblcms2 liblz4 libopenjp2 libpng16 libwebp libwebpdemux libzstd libsharpyuv libgomp "
for f in .gpu/site/imagecodecs.libs/*; do
    b=$(basename "$f"); b=${b%%-*}; [[ $need == *" $b "* ]] || rm "$f"
done
rm -rf .gpu/site/numcodecs/tests .gpu/site/distributed/tests .gpu/site/dask/tests
find .gpu/site -name "*.so*" -type f -exec strip --strip-unneeded {} \; 2>/dev/null || true
tar -C .gpu/site -cJf .gpu/site.tar.xz .
cp "$DATA"/*.svs "$DATA"/*.tif .gpu/data/ 2>/dev/null || true
du -sh .gpu/site.tar.xz .gpu/data
