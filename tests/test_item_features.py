"""Item side information: the competition's folder of <field>.tsv files, a CSV with an item
column (the built-in MovieLens-100K's items.csv), encoded with the item map; bad files are
one sentence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT, dm_for, make_log
from lightrec.data.item_features import feature_source, read_item_features, time_to_year
from lightrec.errors import LightrecError


def _competition_folder(tmp_path):
    folder = tmp_path / "side"
    folder.mkdir()
    (folder / "genres.tsv").write_text("item\tgenres\n1\tDrama\n1\tComedy\n2\tDrama\n99\tWar\n")
    (folder / "directors.tsv").write_text("item\tdirectors\n1\td7\n3\td7\n")
    years = "".join(f"{i}\t{1990 + i}\n" for i in range(1, 30))
    (folder / "years.tsv").write_text("item\tyears\n" + years + "30\tunknown\n")
    return folder


def test_the_competition_layout_is_multi_hot_and_numeric(tmp_path):
    f = read_item_features(_competition_folder(tmp_path), [1, 2, 3, 30])
    assert f.vocab["genres"] == ["Comedy", "Drama"]
    assert f.categorical["genres"].toarray().tolist() == [[1, 1], [0, 1], [0, 0], [0, 0]]
    assert f.categorical["directors"].toarray().tolist() == [[1], [0], [1], [0]]
    years = f.numeric["years"]  # numbers (a stray "unknown" is a missing value)
    assert years[:3].tolist() == [1991.0, 1992.0, 1993.0] and np.isnan(years[3])
    assert f.unknown_items == 27  # item 99 and the years of items 4-29 are not in the data


def _as_the_competition_ships_it(tmp_path):
    """The MovieLens competition's side files, headers and all: the value's column is named
    in the singular (genres.tsv is item<TAB>genre), titles carry quotes and the year."""
    folder = tmp_path / "data" / "train"
    folder.mkdir(parents=True)
    files = {
        "genres.tsv": "item\tgenre\n318\tCrime\n318\tDrama\n2571\tAction\n2571\tSci-Fi\n",
        "directors.tsv": "item\tdirector\n318\tnm0001104\n2571\tnm0905152\n2571\tnm0905154\n",
        "writers.tsv": "item\twriter\n318\tnm0000175\n2571\tnm0905152\n",
        "years.tsv": "item\tyear\n318\t1994\n2571\t1999\n",
        "titles.tsv": "item\ttitle\n318\tShawshank Redemption, The (1994)\n"
        '2571\t"Great Performances" Cats (1998)\n',
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_the_competition_files_as_shipped_are_read(tmp_path):
    f = read_item_features(_as_the_competition_ships_it(tmp_path), [318, 2571])
    assert f.vocab["genres"] == ["Action", "Crime", "Drama", "Sci-Fi"]  # named by the stem
    assert f.categorical["genres"].toarray().tolist() == [[0, 1, 1, 0], [1, 0, 0, 1]]
    assert f.categorical["directors"].toarray().tolist() == [[1, 0, 0], [0, 1, 1]]
    assert f.categorical["writers"].shape == (2, 2)
    assert f.numeric["years"].tolist() == [1994.0, 1999.0]
    assert f.release_year().tolist() == [1994.0, 1999.0]  # --available-only finds it
    assert f.vocab["titles"][0] == '"Great Performances" Cats (1998)'  # quotes are text
    assert f.unknown_items == 0


def test_a_csv_with_an_item_column_splits_cells_on_bars(tmp_path):
    csv = tmp_path / "items.csv"
    titles = "".join(f"{i},Film {i},{1990 + i % 5},Drama|War\n" for i in range(30))
    csv.write_text("item,title,year,genres\n" + titles)
    f = read_item_features(csv, list(range(30)))
    assert f.text == ["title"]  # one value per item: display only, not a feature
    assert f.vocab["genres"] == ["Drama", "War"] and f.categorical["genres"].sum() == 60
    assert f.numeric["year"][:3].tolist() == [1990.0, 1991.0, 1992.0]


def test_string_item_ids_match_the_item_map(tmp_path):
    folder = tmp_path / "side"
    folder.mkdir()
    (folder / "genres.tsv").write_text("item\tgenres\nmovie-1\tDrama\nmovie-2\tWar\n")
    f = read_item_features(folder, ["movie-1", "movie-2"])
    assert f.categorical["genres"].toarray().tolist() == [[1, 0], [0, 1]]


@pytest.mark.slow
def test_side_ids_are_text_like_the_data_files(tmp_path):
    """``0042`` in a side file is not item 42 (ids are text, as the data file reads them),
    whether the item map holds numbers or text."""
    folder = tmp_path / "side"
    folder.mkdir()
    (folder / "genres.tsv").write_text("item\tgenres\n42\tDrama\n0042\tWar\n7\tComedy\n")
    numbers = read_item_features(folder, [7, 42])
    assert numbers.vocab["genres"] == ["Comedy", "Drama"] and numbers.unknown_items == 1
    assert numbers.categorical["genres"].toarray().tolist() == [[1, 0], [0, 1]]
    text = read_item_features(folder, ["0042", "7", "42"])
    assert text.categorical["genres"].toarray().tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]


def test_the_built_in_movielens_has_genres_and_years(tmp_path):
    """The default run reads them: items.csv beside the prepared MovieLens-100K."""
    dm = dm_for(None, tmp_path, path=None, data_dir=str(ROOT / "data"), item_features="auto")
    f = dm.side_features()
    assert f.categorical["genres"].shape == (1682, 19)
    assert np.isnan(f.numeric["year"]).sum() <= 2 and np.nanmax(f.numeric["year"]) == 1998
    assert "title" in f.text


def test_bad_side_files_are_one_sentence(tmp_path):
    folder = tmp_path / "side"
    folder.mkdir()
    (folder / "genres.tsv").write_text("movie\tgenres\n1\tDrama\n")
    with pytest.raises(LightrecError, match=r"genres.tsv must have a header of two columns"):
        read_item_features(folder, [1])
    (folder / "genres.tsv").write_text("item\tgenre\tsource\n1\tDrama\tx\n")
    with pytest.raises(LightrecError, match=r"item<TAB>genres; it has: item, genre, source"):
        read_item_features(folder, [1])
    csv = tmp_path / "items.csv"
    csv.write_text("id,genre\n1,Drama\n")
    with pytest.raises(LightrecError, match=r"items.csv has no column 'item'"):
        read_item_features(csv, [1])
    with pytest.raises(LightrecError, match=r"data.item_features: .*nope does not exist"):
        feature_source(str(tmp_path / "nope"), tmp_path / "log.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LightrecError, match="holds no field"):
        read_item_features(empty, [1])


def test_auto_is_items_csv_beside_the_data_file(tmp_path):
    log = tmp_path / "log.csv"
    make_log().to_csv(log, index=False)
    assert feature_source("auto", log) is None
    (tmp_path / "items.csv").write_text("item,genres\n1,Drama\n")
    assert feature_source("auto", log) == tmp_path / "items.csv"
    assert feature_source(None, log) is None


def test_times_become_years_whatever_the_clock():
    seconds = pd.Timestamp("1997-09-20").timestamp()
    got = time_to_year(np.array([seconds, seconds * 1e3, seconds * 1e9, 5.0]))
    assert got[:3].tolist() == [1997.0] * 3 and np.isnan(got[3])


def test_a_run_folder_from_before_side_information_loads_without_it(tmp_path):
    """A config.yaml written before data.item_features existed builds its data module with
    no side information (what that run had), not a missing-argument error."""
    from omegaconf import OmegaConf

    from helpers import compose_cfg
    from lightrec.runs.finished import load_config
    from lightrec.training.fit import build_datamodule
    from lightrec.utils.path_utils import RunDir

    cfg = compose_cfg("ease", [f"data.data_dir={ROOT / 'data'}"])
    old = OmegaConf.to_container(cfg, resolve=True)  # as every run writes it
    del old["data"]["item_features"]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(old))
    loaded = load_config(RunDir(tmp_path))
    assert loaded.data.item_features is None
    assert build_datamodule(loaded).item_features is None
