"""Writes the small text corpora the project ships, from templates and a seed.

Why generated text: the base model must be pretrained on text we may ship, and the fine-tuning
set must differ from it in *style* so that LoRA's effect is visible in samples. The pretraining
corpus is neutral, third-person, encyclopedic prose about towns, rivers, animals, food and films;
the review set is first-person, emphatic opinion with a score ("9/10"), about films only.

    python -m runner.tools.make_corpus          # rewrites runner/assets/corpus/*

The output is a pure function of the seed, so rerunning reproduces the shipped files byte for byte.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "corpus"

TOWNS = ["Alderford", "Brightwater", "Castlemere", "Dunmore", "Eastbrook", "Fairhaven",
         "Glenrock", "Harrowgate", "Ivybridge", "Kingsley", "Larkspur", "Millbrook",
         "Northwood", "Oakhurst", "Pinecrest", "Queensport", "Redcliff", "Stonebridge",
         "Thornbury", "Westmoor"]
RIVERS = ["Aven", "Brenn", "Calder", "Derwen", "Esk", "Frome", "Garra", "Hollin", "Isel", "Lune"]
REGIONS = ["the northern hills", "the coastal plain", "the river valley", "the eastern marshes",
           "the high moorland", "the southern downs", "the lake district", "the western forest"]
INDUSTRIES = ["wool", "timber", "fishing", "pottery", "grain", "cider", "shipbuilding",
              "stone quarrying", "glassmaking", "printing"]
ANIMALS = [("heron", "birds", "fish and frogs"), ("badger", "mammals", "worms and roots"),
           ("otter", "mammals", "fish and crayfish"), ("kestrel", "birds", "voles and insects"),
           ("red deer", "mammals", "grass and young shoots"), ("newt", "amphibians", "small insects"),
           ("hedgehog", "mammals", "beetles and slugs"), ("swift", "birds", "flying insects"),
           ("pike", "fish", "smaller fish"), ("dormouse", "mammals", "nuts and berries")]
HABITATS = ["wetlands", "old woodland", "hedgerows", "open grassland", "slow rivers",
            "rocky hillsides", "quiet ponds", "village gardens"]
DISHES = [("barley soup", "barley, leeks and stock"), ("apple cake", "apples, flour and butter"),
          ("fish pie", "white fish, potatoes and milk"), ("bean stew", "beans, onions and herbs"),
          ("oat bread", "oats, flour and yeast"), ("plum jam", "plums and sugar"),
          ("cheese scones", "flour, cheese and butter"), ("lentil broth", "lentils and carrots")]
SEASONS = ["spring", "summer", "autumn", "winter"]
FILM_WORDS = ["The Silent Harbour", "Glass Mountain", "A Winter Crossing", "The Last Lantern",
              "Northern Lights", "The Clockmaker", "River of Stars", "Paper Kingdoms",
              "The Long Orchard", "Midnight Ferry", "The Copper Bell", "Distant Shores",
              "The Quiet Engine", "Salt and Iron", "The Lighthouse Keeper", "Seven Bridges"]
GENRES = ["drama", "comedy", "thriller", "mystery", "adventure", "romance", "documentary"]
DIRECTORS = ["Ana Morel", "Jonas Vik", "Priya Nair", "Tomas Berg", "Lea Duval", "Omar Haddad",
             "Mei Lin", "Carlos Ruiz", "Ines Moreau", "Felix Brandt"]
FILM_TOPICS = ["a family that runs a small hotel", "two sisters who inherit a boat",
               "a detective in a flooded city", "a village choir before a contest",
               "a pilot stranded in the desert", "an old teacher and a new student",
               "a chef who loses her sense of taste", "a journey across frozen lakes"]


def _town(rng: random.Random) -> str:
    t, r = rng.choice(TOWNS), rng.choice(RIVERS)
    return rng.choice([
        f"{t} is a market town in {rng.choice(REGIONS)}, on the banks of the river {r}.",
        f"The town of {t} grew around a ford on the {r} and was known for its {rng.choice(INDUSTRIES)}.",
        f"In the nineteenth century {t} had a railway station, two mills and a school.",
        f"{t} holds a fair every {rng.choice(SEASONS)}, when farmers bring {rng.choice(INDUSTRIES)} and livestock to the square.",
        f"The old bridge at {t} has {rng.randint(3, 9)} arches and was rebuilt in {rng.randint(1700, 1950)}.",
        f"About {rng.randint(2, 40) * 1000} people live in {t} today.",
    ])


def _river(rng: random.Random) -> str:
    r = rng.choice(RIVERS)
    return rng.choice([
        f"The river {r} rises in {rng.choice(REGIONS)} and flows for {rng.randint(20, 200)} kilometres to the sea.",
        f"The {r} floods most years in late {rng.choice(SEASONS)}, and the meadows along it are rich.",
        f"Several mills once stood on the {r}, and some of their weirs can still be seen.",
        f"The valley of the {r} is narrow in its upper part and wide near {rng.choice(TOWNS)}.",
    ])


def _animal(rng: random.Random) -> str:
    name, group, food = rng.choice(ANIMALS)
    return rng.choice([
        f"The {name} is one of the {group} found in {rng.choice(HABITATS)}.",
        f"The {name} feeds mainly on {food}.",
        f"In {rng.choice(SEASONS)} the {name} is most often seen near {rng.choice(HABITATS)}.",
        f"The {name} was once common around {rng.choice(TOWNS)}, but it is now rarer.",
    ])


def _food(rng: random.Random) -> str:
    dish, parts = rng.choice(DISHES)
    return rng.choice([
        f"{dish.capitalize()} is made from {parts}.",
        f"In {rng.choice(TOWNS)}, {dish} is often eaten in {rng.choice(SEASONS)}.",
        f"A traditional recipe for {dish} takes about {rng.randint(2, 12) * 10} minutes to prepare.",
    ])


def _film_fact(rng: random.Random) -> str:
    f, g, d = rng.choice(FILM_WORDS), rng.choice(GENRES), rng.choice(DIRECTORS)
    return rng.choice([
        f"{f} is a {g} film directed by {d} and released in {rng.randint(1960, 2024)}.",
        f"The film {f} tells the story of {rng.choice(FILM_TOPICS)}.",
        f"{f} was filmed near {rng.choice(TOWNS)} over {rng.randint(3, 20)} weeks.",
        f"{d} is a director known for {g} films and quiet camera work.",
        f"The running time of {f} is {rng.randint(80, 170)} minutes.",
    ])


def pretrain_corpus(rng: random.Random, n_paragraphs: int) -> str:
    """Mostly neutral prose; one paragraph in 25 is a review, as a real web corpus would hold,
    so the base model knows the review vocabulary but rarely uses it unprompted."""
    makers = [_town, _river, _animal, _food, _film_fact]
    paragraphs = []
    for _ in range(n_paragraphs):
        if rng.random() < 0.04:
            paragraphs.append(review(rng)["text"])
            continue
        k = rng.randint(3, 6)
        paragraphs.append(" ".join(rng.choice(makers)(rng) for _ in range(k)))
    return "\n".join(paragraphs) + "\n"


POSITIVE = ["I loved every minute of it!", "What a wonderful film!", "Absolutely brilliant.",
            "This one made me smile all evening.", "I was hooked from the first scene!",
            "Easily the best thing I have seen this year."]
NEGATIVE = ["I was bored stiff.", "What a waste of an evening.", "Honestly, it dragged.",
            "I nearly walked out halfway.", "Such a letdown, sadly.", "I expected so much more."]
POS_DETAIL = ["The acting is superb", "The music is gorgeous", "The story kept me guessing",
              "The ending had me in tears", "Every shot looks like a painting",
              "The lead actress is fantastic"]
NEG_DETAIL = ["The plot makes no sense", "The dialogue is clumsy", "The pacing is painfully slow",
              "The jokes fall flat", "The ending is a mess", "The characters are paper thin"]
POS_CLOSE = ["Highly recommended!", "Go and see it!", "I will watch it again!", "A real gem!"]
NEG_CLOSE = ["Skip it.", "Not recommended.", "Save your money.", "Avoid this one."]


def review(rng: random.Random, fine_tuning: bool = False, film: str | None = None) -> dict:
    """One review. The fine-tuning set also opens like the neutral corpus does ("The film X
    ..."), so after LoRA a neutral prompt turns into a review: the visible style shift.
    A given `film` skips that draw (the preference set names its film in the prompt)."""
    positive = rng.random() < 0.6
    if film is None:
        film = rng.choice(FILM_WORDS)
    openers = [f"I watched {film} last night.", f"Just saw {film}.",
               f"My friends and I went to see {film}."]
    if fine_tuning:
        openers += [f"The film {film} was not what I expected.",
                    f"The film {film} finally came to our cinema.",
                    f"{film} is the film everyone talks about."]
    opener = rng.choice(openers)
    if positive:
        body = [rng.choice(POSITIVE), rng.choice(POS_DETAIL) + "!", rng.choice(POS_CLOSE)]
        score = rng.randint(7, 10)
    else:
        body = [rng.choice(NEGATIVE), rng.choice(NEG_DETAIL) + ".", rng.choice(NEG_CLOSE)]
        score = rng.randint(1, 4)
    text = " ".join([opener] + body + [f"{score}/10."])
    return {"text": text, "label": int(positive)}


# English -> French sentence pairs with shared slots (town, number, animal, season), so the
# translations are right by construction. The shape of TFDS mtnt/en-fr: features src and dst.
SEASONS_FR = {"spring": "au printemps", "summer": "en été", "autumn": "en automne",
              "winter": "en hiver"}
ANIMALS_FR = {"heron": "le héron", "badger": "le blaireau", "otter": "la loutre",
              "kestrel": "le faucon", "hedgehog": "le hérisson", "swift": "le martinet"}
PAIRS = [
    ("The market in {town} opens at {n} o'clock.", "Le marché de {town} ouvre à {n} heures."),
    ("I live in {town} with my family.", "J'habite à {town} avec ma famille."),
    ("The train to {town} is late again.", "Le train pour {town} est encore en retard."),
    ("We visit {town} every year {season_fr_en}.", "Nous visitons {town} chaque année {season_fr}."),
    ("The bridge has {n} arches.", "Le pont a {n} arches."),
    ("{animal_en} lives near the river.", "{animal_fr} vit près de la rivière."),
    ("I saw {animal_en_lc} this morning.", "J'ai vu {animal_fr_lc} ce matin."),
    ("The museum is closed on Mondays.", "Le musée est fermé le lundi."),
    ("Where is the station, please?", "Où est la gare, s'il vous plaît ?"),
    ("The soup is very good.", "La soupe est très bonne."),
    ("It rains a lot {season_fr_en}.", "Il pleut beaucoup {season_fr}."),
    ("My brother works in {town}.", "Mon frère travaille à {town}."),
    ("There are {n} people in the room.", "Il y a {n} personnes dans la salle."),
    ("The film starts at {n} o'clock.", "Le film commence à {n} heures."),
]


def translation_pair(rng: random.Random) -> dict:
    en, fr = rng.choice(PAIRS)
    season = rng.choice(SEASONS)
    animal = rng.choice(sorted(ANIMALS_FR))
    slots = dict(town=rng.choice(TOWNS), n=rng.randint(2, 12), season_fr_en=f"in {season}",
                 season_fr=SEASONS_FR[season], animal_en=f"The {animal}",
                 animal_fr=ANIMALS_FR[animal].capitalize(), animal_en_lc=f"a {animal}",
                 animal_fr_lc="un " + ANIMALS_FR[animal].split(" ", 1)[1])
    return {"src": en.format(**slots), "dst": fr.format(**slots)}


# Instruction / response records with the features of databricks-dolly-15k.
def prompt_record(rng: random.Random) -> dict:
    kind = rng.choice(["town", "animal", "food", "film"])
    if kind == "town":
        text = " ".join(_town(rng) for _ in range(2))
        return {"instruction": "Write two sentences about a market town.",
                "context": "", "response": text, "category": "creative_writing"}
    if kind == "animal":
        name, group, food = rng.choice(ANIMALS)
        return {"instruction": f"What does the {name} eat?", "context": "",
                "response": f"The {name} feeds mainly on {food}.", "category": "open_qa"}
    if kind == "food":
        dish, parts = rng.choice(DISHES)
        return {"instruction": f"What is {dish} made from?", "context": "",
                "response": f"{dish.capitalize()} is made from {parts}.", "category": "open_qa"}
    film = review(rng)["text"]
    return {"instruction": "Summarize this review in one word: positive or negative.",
            "context": film, "response": "positive" if "/10." in film and
            int(film.rsplit(" ", 1)[1].split("/")[0]) >= 5 else "negative",
            "category": "classification"}


# Conversations with the shape of HuggingFaceH4/ultrachat_200k: {"prompt", "messages"}, one to
# three user/assistant exchanges and, as there, no system message.
FOLLOW_UPS = [("Thank you!", "You are welcome."), ("Can you say that again, shorter?", None),
              ("Is that certain?", "Yes, that is what the records say.")]


def conversation(rng: random.Random) -> dict:
    first = prompt_record(rng)
    question = first["instruction"] + (f"\n\n{first['context']}" if first["context"] else "")
    messages = [{"role": "user", "content": question},
                {"role": "assistant", "content": first["response"]}]
    for _ in range(rng.choice([0, 0, 1, 2])):
        ask, answer = rng.choice(FOLLOW_UPS)
        messages += [{"role": "user", "content": ask},
                     {"role": "assistant", "content": answer or first["response"].split(". ")[0]
                      .rstrip(".") + "."}]
    return {"prompt": question, "messages": messages}


# Preference pairs with the shape of HuggingFaceH4/ultrafeedback_binarized (train_prefs /
# test_prefs): {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}, chosen and
# rejected being [user, assistant] messages. The preference is one of *style*, learnable by the
# tiny model: asked to review a film, the chosen answer is a review in the fine-tuning set's
# style (positive or negative), the rejected one two encyclopedic sentences about
# towns, rivers, animals or food, off topic. Short, so that a pair fits short sequences: the
# tiny tokenizer takes ~2 characters a piece for reviews, so answers of at most 110 / 130
# characters run ~40-65 pieces (the shipped reviews run 40-80), prompts ~15-25. No "?" or ":"
# in the prompts: that tokenizer maps them to <unk>.
PREF_PROMPTS = ["Write a short review of the film {film}.",
                "Please review {film} for me.",
                "Give me a short review of {film}.",
                "Review the film {film}, briefly.",
                "Write a quick review of {film}."]
CHOSEN_MAX_CHARS, REJECTED_MAX_CHARS = 110, 130


def _off_topic(rng: random.Random) -> str:
    """Two neutral-corpus sentences (no films), at most REJECTED_MAX_CHARS long (a third would
    not fit: the sentences run 38-102 characters)."""
    makers = [_town, _river, _animal, _food]
    while True:
        text = " ".join(rng.choice(makers)(rng) for _ in range(2))
        if len(text) <= REJECTED_MAX_CHARS:
            return text


def preference_pair(rng: random.Random) -> dict:
    film = rng.choice(FILM_WORDS)
    prompt = rng.choice(PREF_PROMPTS).format(film=film)
    chosen = review(rng, film=film)["text"]
    while len(chosen) > CHOSEN_MAX_CHARS:
        chosen = review(rng, film=film)["text"]
    user = {"role": "user", "content": prompt}
    return {"prompt": prompt,
            "chosen": [user, {"role": "assistant", "content": chosen}],
            "rejected": [user, {"role": "assistant", "content": _off_topic(rng)}],
            "score_chosen": rng.choice([8.0, 8.5, 9.0, 9.5, 10.0]),
            "score_rejected": rng.choice([1.0, 1.5, 2.0, 2.5, 3.0])}


def preference_splits(rng: random.Random, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """No answer repeats across the splits (nor a chosen/rejected pair within one), so the test
    split's records are all unseen in training."""
    seen_chosen, seen_rejected, out = set(), set(), {}
    for split, n in sizes.items():
        rows, pairs = [], set()
        while len(rows) < n:
            r = preference_pair(rng)
            c, j = r["chosen"][1]["content"], r["rejected"][1]["content"]
            if c in seen_chosen or j in seen_rejected or (c, j) in pairs:
                continue
            pairs.add((c, j))
            rows.append(r)
        seen_chosen |= {r["chosen"][1]["content"] for r in rows}
        seen_rejected |= {r["rejected"][1]["content"] for r in rows}
        out[split] = rows
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSETS, help="folder to write into")
    parser.add_argument("--seed", type=int, default=20261123)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    (args.out / "pretrain.txt").write_text(pretrain_corpus(rng, 1600), encoding="utf-8")
    for split, n in (("train", 1600), ("validation", 200)):
        lines = [json.dumps(review(rng, fine_tuning=True)) for _ in range(n)]
        (args.out / f"reviews_{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Separate generators: adding a dataset never changes the files above.
    rng = random.Random(args.seed + 1)
    for split, n in (("train", 1200), ("valid", 100), ("test", 100)):
        write_jsonl(args.out / f"translations_{split}.jsonl",
                    [translation_pair(rng) for _ in range(n)])
    rng = random.Random(args.seed + 2)
    write_jsonl(args.out / "prompts_train.jsonl", [prompt_record(rng) for _ in range(800)])
    rng = random.Random(args.seed + 3)
    for split, n in (("train_sft", 600), ("test_sft", 60)):
        write_jsonl(args.out / f"chats_{split}.jsonl", [conversation(rng) for _ in range(n)])
    rng = random.Random(args.seed + 4)
    for split, rows in preference_splits(rng, {"train_prefs": 480, "test_prefs": 60}).items():
        write_jsonl(args.out / f"preferences_{split}.jsonl", rows)
    for p in sorted(args.out.iterdir()):
        print(f"{p}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
