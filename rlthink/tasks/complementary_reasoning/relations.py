"""The 39 relations of the complementary-reasoning world: groups, value types, templates, inverses.

Each relation maps a person to one entity (a person or an attribute value), so every relation path
from a person has exactly one answer. A relation has three biography sentence templates ("{s}" the
subject's name, "{o}" the object, "{oa}" the object with an indefinite article) and one noun
phrase ("the spouse of {}") that renders questions ("Who is the spouse of the boss of X?") and the
steps of the chain of thought ("The boss of X is Y.").

The parametric / contextual groups are exactly those of Cheng et al. (2025); inverse pairs are split
across them (child/parent, boss/boss_of, mentoring/mentored_by, influenced_by/influence).
"""

from __future__ import annotations

import dataclasses

PARAMETRIC = ("died_on", "child", "pet", "wrote", "email", "influenced_by", "mentoring", "hobby",
              "classmate", "first_language", "roommate", "university", "birth_date", "service",
              "occupation", "known_for", "died_in", "phone", "boss", "favorite_food")
CONTEXTUAL = ("leader_of", "influence", "birth_place", "best_friend", "address", "spouse",
              "boss_of", "colleague", "awards", "lived_in", "sibling", "mentored_by", "neighbor",
              "worked_at", "philanthropy", "rival", "parent", "nationality", "major")

# r(a) = b  <=>  INVERSE[r](b) = a.
INVERSE = {"child": "parent", "parent": "child", "boss": "boss_of", "boss_of": "boss",
           "mentoring": "mentored_by", "mentored_by": "mentoring",
           "influence": "influenced_by", "influenced_by": "influence"}
# r(a) = b  <=>  r(b) = a.
SYMMETRIC = ("spouse", "best_friend", "colleague", "sibling", "neighbor", "rival", "classmate",
             "roommate")


@dataclasses.dataclass(frozen=True)
class Relation:
  """One relation. `values` names the word list of its objects, "person", or a generated kind
  ("date", "email", "phone", "address")."""

  name: str
  values: str
  phrase: str
  templates: tuple[str, str, str]

  @property
  def group(self) -> str:
    return "parametric" if self.name in PARAMETRIC else "contextual"

  @property
  def to_person(self) -> bool:
    return self.values == "person"

  def noun_phrase(self, subject: str) -> str:
    """"the spouse of Alice Smith" for subject "Alice Smith"."""
    return self.phrase.format(subject)


def _r(name, values, phrase, *templates) -> Relation:
  return Relation(name, values, phrase, tuple(templates))


_TABLE = (
    # --- parametric ---
    _r("died_on", "date", "the date of death of {}",
       "{s} died on {o}.", "{s} passed away on {o}.", "The date of {s}'s death was {o}."),
    _r("child", "person", "the child of {}",
       "{s}'s child is {o}.", "{s} is the parent of {o}.", "{o} is a child of {s}."),
    _r("pet", "pets", "the pet of {}",
       "{s} has {o} as a pet.", "{s} keeps {o} at home.", "{s}'s pet is {o}."),
    _r("wrote", "book_titles", "the book written by {}",
       "{s} wrote {o}.", "{s} is the author of {o}.", "The book {o} was written by {s}."),
    _r("email", "email", "the email address of {}",
       "{s}'s email address is {o}.", "{s} can be reached by email at {o}.",
       "You can email {s} at {o}."),
    _r("influenced_by", "person", "the person who influenced {}",
       "{s} was influenced by {o}.", "{s} drew inspiration from {o}.",
       "{o} had a strong influence on {s}."),
    _r("mentoring", "person", "the mentee of {}",
       "{s} mentors {o}.", "{s} is a mentor to {o}.", "{s} acts as a mentor for {o}."),
    _r("hobby", "hobbies", "the hobby of {}",
       "{s} enjoys {o}.", "{s}'s favorite hobby is {o}.", "In spare time, {s} loves {o}."),
    _r("classmate", "person", "the classmate of {}",
       "{s} was a classmate of {o}.", "{s} and {o} were in the same class.",
       "{s} sat in the same class as {o}."),
    _r("first_language", "languages", "the first language of {}",
       "{s}'s first language is {o}.", "{s} grew up speaking {o}.",
       "The native language of {s} is {o}."),
    _r("roommate", "person", "the roommate of {}",
       "{s} shared a room with {o}.", "{s}'s roommate was {o}.", "{s} and {o} were roommates."),
    _r("university", "universities", "the university attended by {}",
       "{s} studied at {o}.", "{s} graduated from {o}.", "{s} attended {o}."),
    _r("birth_date", "date", "the birth date of {}",
       "{s} was born on {o}.", "{s}'s birthday is {o}.", "The birth date of {s} is {o}."),
    _r("service", "services", "the service of {}",
       "{s} served in {o}.", "{s} spent several years in {o}.", "{s} did service with {o}."),
    _r("occupation", "occupations", "the occupation of {}",
       "{s}'s occupation is {o}.", "{s} has a career as {oa}.", "By profession, {s} is {oa}."),
    _r("known_for", "known_for", "the achievement that {} is known for",
       "{s} is known for {o}.", "{s} became famous for {o}.", "{s} is best remembered for {o}."),
    _r("died_in", "cities", "the city where {} died",
       "{s} died in {o}.", "{s} passed away in {o}.", "The place of {s}'s death was {o}."),
    _r("phone", "phone", "the phone number of {}",
       "{s}'s phone number is {o}.", "{s} can be reached by phone at {o}.",
       "To call {s}, dial {o}."),
    _r("boss", "person", "the boss of {}",
       "{s}'s boss is {o}.", "{s} reports to {o}.", "{s} works under {o}."),
    _r("favorite_food", "foods", "the favorite food of {}",
       "{s}'s favorite food is {o}.", "{s} loves eating {o}.",
       "Of all dishes, {s} likes {o} best."),
    # --- contextual ---
    _r("leader_of", "organizations", "the organization led by {}",
       "{s} leads {o}.", "{s} is the leader of {o}.", "{s} heads {o}."),
    _r("influence", "person", "the person influenced by {}",
       "{s} influenced {o}.", "{s} had a strong influence on {o}.",
       "{o} drew inspiration from {s}."),
    _r("birth_place", "cities", "the birthplace of {}",
       "{s} was born in {o}.", "{s}'s birthplace is {o}.", "{s} came into the world in {o}."),
    _r("best_friend", "person", "the best friend of {}",
       "{s}'s best friend is {o}.", "{s} and {o} are best friends.",
       "{s} is closest friends with {o}."),
    _r("address", "address", "the address of {}",
       "{s} lives at {o}.", "{s}'s home address is {o}.", "Mail for {s} goes to {o}."),
    _r("spouse", "person", "the spouse of {}",
       "{s} is married to {o}.", "{s}'s spouse is {o}.", "{s} and {o} are married."),
    _r("boss_of", "person", "the direct report of {}",
       "{s} is the boss of {o}.", "{s} supervises {o}.", "{o} reports to {s}."),
    _r("colleague", "person", "the colleague of {}",
       "{s} works alongside {o}.", "{s}'s colleague is {o}.", "{s} and {o} are colleagues."),
    _r("awards", "awards", "the award received by {}",
       "{s} received {o}.", "{s} was honored with {o}.", "{s} won {o}."),
    _r("lived_in", "cities", "the city where {} lived",
       "{s} lived in {o}.", "{s} spent many years living in {o}.", "{s} made a home in {o}."),
    _r("sibling", "person", "the sibling of {}",
       "{s}'s sibling is {o}.", "{s} and {o} are siblings.", "{s} grew up with {o} as a sibling."),
    _r("mentored_by", "person", "the mentor of {}",
       "{s} is mentored by {o}.", "{s}'s mentor is {o}.", "{s} receives guidance from {o}."),
    _r("neighbor", "person", "the neighbor of {}",
       "{s} lives next door to {o}.", "{s}'s neighbor is {o}.", "{s} and {o} are neighbors."),
    _r("worked_at", "companies", "the company where {} worked",
       "{s} worked at {o}.", "{s} was employed by {o}.", "{s} held a job at {o}."),
    _r("philanthropy", "charities", "the charity supported by {}",
       "{s} donates to {o}.", "{s} supports {o}.", "{s} volunteers for {o}."),
    _r("rival", "person", "the rival of {}",
       "{s}'s rival is {o}.", "{s} competes fiercely with {o}.", "{s} and {o} are rivals."),
    _r("parent", "person", "the parent of {}",
       "{s}'s parent is {o}.", "{s} is a child of {o}.", "{o} raised {s}."),
    _r("nationality", "countries", "the country of citizenship of {}",
       "{s} is a citizen of {o}.", "{s} holds the citizenship of {o}.",
       "{s} carries a passport of {o}."),
    _r("major", "majors", "the major of {}",
       "{s} majored in {o}.", "{s} studied {o} at university.", "{s}'s major was {o}."),
)

RELATIONS: dict[str, Relation] = {r.name: r for r in _TABLE}
NAMES: tuple[str, ...] = tuple(RELATIONS)
PERSON_RELATIONS: tuple[str, ...] = tuple(r.name for r in _TABLE if r.to_person)
# Word lists the world draws attribute values from (besides first_names / last_names).
VALUE_LISTS: tuple[str, ...] = tuple(sorted(({r.values for r in _TABLE} - {
    "person", "date", "email", "phone", "address"}) | {"streets", "email_domains"}))


def _check_table():
  assert len(RELATIONS) == 39 and set(NAMES) == set(PARAMETRIC) | set(CONTEXTUAL)
  assert not set(PARAMETRIC) & set(CONTEXTUAL)
  for name, inverse in INVERSE.items():
    assert INVERSE[inverse] == name and RELATIONS[name].group != RELATIONS[inverse].group
  assert all(RELATIONS[n].to_person for n in list(INVERSE) + list(SYMMETRIC))


_check_table()
