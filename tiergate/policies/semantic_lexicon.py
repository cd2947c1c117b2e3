"""The small word lists behind the semantic cache's verifier (see `semantic.py`).

Each list is a closed class of English or a rule with a stated reason, not a list of words that happened to
matter in one data set: the verifier must hold on real traffic. All entries are lower case; stems are
compared through `stem()` in `semantic_text.py`, so list each word once in its base form.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Function words: articles, pronouns, auxiliaries and modals, prepositions, conjunctions, question words and
# degree adverbs. They carry the grammar of a question, not its topic, so a query may add or drop them
# freely ("What is X?" / "What's X?" / "Tell me what X is"). Words that flip or restrict a question are
# deliberately absent: negations, "only", opposites such as up/down or before/after (checked as antonyms).
STOP_WORDS = _words(
    """
    a an the this that these those some any each every all both such another other own same
    i me my mine myself you your yours yourself yourselves he him his himself she her hers herself
    it its itself we us our ours ourselves they them their theirs themselves one ones
    someone somebody something anyone anybody anything everyone everybody everything
    be am is are was were been being do does did doing done have has had having
    can could will would shall should may might must 's 're 've 'd 'll 'm
    in on at of for with by about as into to from than through via per within during among between
    and or but if so because while whether then also
    what which who whom whose when where why how whatever whichever
    very really actually just even ever still too quite rather much many
    there here else etc
    please
    """
)

# Request framing: how a person asks, not what. "Can you tell me X", "I want to know X", "Please explain X"
# and "X" ask the same thing, as in every reworded-question benchmark (GPTCache's among them).
FRAMING_WORDS = _words("tell know explain describe wonder want like let show")
# Light verbs carry little meaning of their own ("take a photo" / "make a photo", "get better" / "become
# better", "do it using X" / "do it in X"), nor do verbs that only link ("why does X look blue", "where is
# X located").
LIGHT_VERBS = _words("do make take have give get go use using look seem appear located")
# Nouns that frame a question when "of", "to" or "for" follows ("the best way to X" is "how to X", "tips
# for X" is "how to X", "what kind of X" is "what X"), with the plain evaluatives that go with them.
FRAMING_NOUNS = _words("way ways method methods example examples kind kinds type types sort sorts tips")
FRAMING_ADJECTIVES = _words("best good better right proper some")

# Words that negate what follows. Contracted forms ("don't", "isn't") are recognised by their "n't".
NEGATIONS = _words("not no never none nothing nobody nowhere neither nor without cannot")

# General-purpose opposites that turn the answer to a question around. Regular comparatives and
# superlatives (shorter/longer, easiest/hardest) are derived from these, and opposites formed with a prefix
# (legal/illegal, enable/disable, increase/decrease, upload/download) are found by the prefix rules below.
ANTONYMS: tuple[tuple[str, str], ...] = (
    ("good", "bad"), ("best", "worst"), ("better", "worse"), ("more", "less"), ("more", "fewer"),
    ("most", "least"), ("high", "low"), ("big", "small"), ("large", "small"), ("long", "short"),
    ("fast", "slow"), ("cheap", "expensive"), ("easy", "hard"),
    ("easy", "difficult"), ("old", "new"), ("old", "young"), ("hot", "cold"), ("strong", "weak"),
    ("heavy", "light"), ("rich", "poor"), ("early", "late"), ("first", "last"), ("before", "after"),
    ("past", "future"), ("up", "down"), ("add", "remove"), ("add", "delete"),
    ("buy", "sell"), ("win", "lose"), ("gain", "lose"), ("start", "stop"), ("start", "end"),
    ("begin", "end"), ("open", "close"), ("send", "receive"), ("push", "pull"), ("accept", "reject"),
    ("allow", "block"), ("love", "hate"), ("positive", "negative"), ("true", "false"),
    ("success", "failure"), ("maximum", "minimum"), ("max", "min"), ("male", "female"),
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("husband", "wife"), ("left", "right"),
    ("north", "south"), ("east", "west"), ("public", "private"), ("day", "night"),
    ("summer", "winter"), ("happy", "sad"), ("full", "empty"), ("wet", "dry"), ("borrow", "lend"),
    ("give", "receive"), ("rise", "fall"), ("pro", "con"), ("benefit", "disadvantage"),
    ("advantage", "drawback"), ("benefit", "drawback"), ("cause", "effect"), ("question", "answer"),
    # Gender counterparts: "should I tell her" and "should I tell him" are different questions.
    ("he", "she"), ("him", "her"), ("his", "her"), ("himself", "herself"), ("son", "daughter"),
    ("brother", "sister"), ("father", "mother"), ("king", "queen"), ("gay", "straight"),
)  # fmt: skip

# Irregular forms of common verbs, so that "won" meets "win" and "given" meets "give" (regular forms are
# handled by the stemmer). Forms that are also common other words ("left", "saw", "found") are left out.
IRREGULAR_VERBS = {
    "gave": "give", "given": "give", "bought": "buy", "sold": "sell", "won": "win", "lost": "lose",
    "began": "begin", "begun": "begin", "sent": "send", "lent": "lend", "rose": "rise", "risen": "rise",
    "fell": "fall", "fallen": "fall", "took": "take", "taken": "take", "made": "make", "got": "get",
    "gotten": "get", "went": "go", "gone": "go", "came": "come", "became": "become", "knew": "know",
    "known": "know", "told": "tell", "thought": "think", "wrote": "write", "written": "write",
    "ate": "eat", "eaten": "eat", "paid": "pay", "built": "build", "caught": "catch", "taught": "teach",
    "brought": "bring", "held": "hold", "met": "meet", "ran": "run", "spent": "spend", "felt": "feel",
    "understood": "understand", "forgot": "forget", "forgotten": "forget", "chose": "choose",
    "chosen": "choose", "drove": "drive", "driven": "drive", "grew": "grow", "grown": "grow",
}  # fmt: skip

# Prefixes that negate a word (legal/illegal, able/unable, agree/disagree, stop/nonstop).
NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "non-", "anti", "anti-")

# Prefixes that swap a word into its opposite over the same stem (increase/decrease, import/export,
# enable/disable, upload/download, input/output, encrypt/decrypt, overestimate/underestimate).
OPPOSITE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("in", "de"), ("en", "de"), ("en", "dis"), ("im", "ex"), ("in", "ex"), ("in", "out"), ("up", "down"),
    ("over", "under"), ("pre", "post"), ("max", "min"), ("on", "off"), ("inter", "intra"),
)  # fmt: skip

# Prepositions that give the noun after them a role in an asymmetric relation: the order of such nouns
# matters ("convert ethane to ethene" / "convert ethene to ethane", "flights from A to B",
# "is A better than B"). Symmetric connectors (and, or, vs, between) are absent on purpose.
ROLE_MARKERS = {
    "to": "goal", "into": "goal", "toward": "goal", "towards": "goal", "onto": "goal",
    "from": "source", "than": "comparison",
}  # fmt: skip

# Written-out numbers. "one" is also a pronoun ("which one is best"), so alone it counts only where the
# other query writes the digit 1 (see `semantic_text.numbers`).
UNITS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "dozen": 12,
}  # fmt: skip
SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000, "lakh": 100_000}
# Suffixes that scale a number written with digits: 10k, 5M, 2bn.
DIGIT_SCALES = {"k": 1_000, "m": 1_000_000, "mn": 1_000_000, "b": 1_000_000_000, "bn": 1_000_000_000}

# Question words that ask for a different kind of answer: a reason, a time, a place, a person. "what",
# "which" and "how" ask for a thing or a way and stand for one another in paraphrases ("What is the best
# way to X?" / "How do I X?"), so they carry no type. "how many", "how much", ... ask for a quantity.
QUESTION_TYPES = {
    "why": "reason", "when": "time", "where": "place", "who": "person", "whom": "person", "whose": "person",
}  # fmt: skip
QUANTITY_AFTER_HOW = _words("many much long often old far big")
# Auxiliaries and modals: a question that opens with one asks yes or no, and which one says what kind of
# yes or no: "Can I X?" (is it possible), "Should I X?" (is it advisable), "Will X?" (a prediction) and
# "Is X?" / "Do X?" (a fact) are different questions.
YES_NO = {
    "can": "possible", "could": "possible", "may": "possible", "might": "possible",
    "should": "advisable", "must": "advisable", "shall": "advisable", "ought": "advisable",
    "will": "predicted", "would": "predicted",
    "is": "fact", "are": "fact", "am": "fact", "was": "fact", "were": "fact", "do": "fact", "does": "fact",
    "did": "fact", "has": "fact", "have": "fact", "had": "fact",
}  # fmt: skip
