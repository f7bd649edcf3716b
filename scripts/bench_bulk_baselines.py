"""The baselines of `skycut bench --bulk`: the same stamps cut by astropy and by astrocut.

Called by the bench (src/bench/bulk.rs) with the images it wrote and its catalogue (CSV: ra, dec
and `image`, the image ID butler://bulk/NAME of the file DIR/NAME.fits). Prints one line per
tool, `measured TOOL STAMPS SECONDS BYTES VERSION` (or `skipped TOOL REASON`), where the time
runs from the first file opened to the output file written, and BYTES is that file's size.

- astropy: each image opened once (memmap), its rows' pixel positions computed in one vectorised
  call of its WCS, then `Cutout2D(mode="partial", fill_value=nan)` per row; the stamps stacked
  into one (N, SIZE, SIZE) float32 array written as one FITS file. Its best case, all rows.
- astrocut: `fits_cut` per row (one sky position per call, as its API takes), the file named,
  in memory (`memory_only=True`), the stamps stacked and written as one FITS file as above;
  over an even sample of `--astrocut-stamps` rows, since it is slow.
"""

import argparse
import csv
import os
import sys
import time
import warnings
from collections import defaultdict

import astropy
import numpy as np
from astropy.io import fits


def read_catalogue(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [(float(r["ra"]), float(r["dec"]), r["image"]) for r in rows]


def file_of(images, image_id):
    return os.path.join(images, image_id.rsplit("/", 1)[-1] + ".fits")


def write_cube(stamps, out, size):
    cube = np.stack(stamps) if stamps else np.zeros((0, size, size), np.float32)
    fits.PrimaryHDU(cube.astype(np.float32, copy=False)).writeto(out, overwrite=True)
    return os.path.getsize(out)


def astropy_rows(rows, images, size, out):
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    by_image = defaultdict(list)
    for ra, dec, image in rows:
        by_image[image].append((ra, dec))
    started = time.perf_counter()
    stamps = []
    for image, positions in by_image.items():
        with fits.open(file_of(images, image), memmap=True) as f:
            data = f[0].data
            wcs = WCS(f[0].header)
            radec = np.array(positions)
            xs, ys = wcs.all_world2pix(radec[:, 0], radec[:, 1], 0)
            for x, y in zip(xs, ys):
                cut = Cutout2D(data, (x, y), (size, size), mode="partial", fill_value=np.nan)
                stamps.append(np.asarray(cut.data, dtype=np.float32))
    written = write_cube(stamps, out, size)
    return len(stamps), time.perf_counter() - started, written


def astrocut_rows(rows, images, size, out):
    from astropy.coordinates import SkyCoord
    from astrocut import fits_cut

    started = time.perf_counter()
    stamps = []
    for ra, dec, image in rows:
        cut = fits_cut(
            [file_of(images, image)],
            SkyCoord(ra, dec, unit="deg"),
            size,
            memory_only=True,
            fill_value=np.nan,
        )
        hdul = cut[0]
        data = next(h.data for h in hdul if h.data is not None)
        stamps.append(np.asarray(data, dtype=np.float32))
    written = write_cube(stamps, out, size)
    return len(stamps), time.perf_counter() - started, written


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True)
    p.add_argument("--catalogue", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--astrocut-stamps", type=int, default=5000)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    rows = read_catalogue(args.catalogue)

    n, seconds, written = astropy_rows(rows, args.images, args.size, os.path.join(args.out, "astropy.fits"))
    print(f"measured astropy {n} {seconds:.6f} {written} {astropy.__version__}", flush=True)

    try:
        import astrocut
    except ImportError:
        print("skipped astrocut it is not installed (scripts/bench-bulk installs it)", flush=True)
        return
    take = max(1, min(args.astrocut_stamps, len(rows)))
    sample = rows[:: max(1, len(rows) // take)][:take]
    n, seconds, written = astrocut_rows(sample, args.images, args.size, os.path.join(args.out, "astrocut.fits"))
    print(f"measured astrocut {n} {seconds:.6f} {written} {astrocut.__version__}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
