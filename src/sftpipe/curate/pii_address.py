"""ADDRESS spans: a street with its house number in the orders of many countries, widened to unit, city, region
and postcode (see sftpipe.curate.pii for the whole description)."""

from __future__ import annotations

import re

from .pii_scripts import _DIGIT, _L, _LO, _UP, Span, _lexicon

_A_NUM = r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,5}[A-Za-z]?)?"
_AW = rf"(?:{_UP}{_L}*(?:-{_L}+)*\.?|\d{{1,3}}(?:st|nd|rd|th))"  # a capitalised street-name word or an ordinal
_A_PART = r"(?:de[ \t]+la|de[ \t]+los|de[ \t]+las|de[ \t]+l['’]|d['’]|de|du|des|la|le|les|l['’]|del|della|dei|" \
          r"degli|delle|di|da|das|do|dos|los|las|el|y)"
_A_WORDS = rf"(?:{_A_PART}[ \t]*)?{_AW}(?:[ \t]+(?:{_A_PART}[ \t]*)?{_AW}){{0,3}}"
_A_EN_TYPES = ("Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
               "Tce|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Cres|Close|Row|Mews|Wynd|Walk|"
               "Gardens|Grove|Hill|Rise|Vale|View|Green|Parade|Pde|Esplanade|Quay|Wharf|Yard|Alley|Loop|Pike|Plaza|"
               "Path|Heights|Bend|Cove|Crossing|Strand|Embankment|Promenade|Causeway|Expressway|Freeway|Turnpike|"
               "Ridge|Run|Landing|Commons|Gate|Hollow|Meadows?|Park|Approach|Drove|Glen|Croft|Wood|Broadway")
_A_DIR = r"(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)"
_A_EN = rf"{_A_NUM},?[ \t]+(?:{_A_DIR}\.?[ \t]+)?(?:{_AW}[ \t]+){{1,4}}(?i:{_A_EN_TYPES})\b\.?" \
        rf"(?:[ \t]+(?:{_A_DIR}|Upper|Lower|Extension|Ext)\b)?|{_A_NUM},?[ \t]+{_UP}{_LO}+(?:way|gate)\b"
_A_FR = rf"{_A_NUM}(?:[ \t]?(?:bis|ter|quater))?,?[ \t]+(?i:rue|avenue|av\.|boulevard|bd|boul\.|place|allée|allee|" \
        rf"impasse|chemin|quai|cours|route|rte|passage|square|voie|sentier|rang|montée|côte|ruelle|promenade|" \
        rf"esplanade|faubourg|parvis|cité|hameau|calle|c/|avenida|avda\.?|paseo|plaza|carrer|passeig|plaça|" \
        rf"ronda|camino|carretera|calzada|via|viale|piazza|piazzale|corso|largo|vicolo|strada|rua|travessa|praça|" \
        rf"estrada|alameda|rodovia)[ \t]+{_A_WORDS}(?:[ \t]+(?:Ouest|Est|Nord|Sud))?"  # the number first, then the type
_A_SUFFIX = r"(?i:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer|chaussee|graben|markt|gracht|straat|laan|" \
            r"plein|kade|singel|dijk|dreef|steeg|gatan|vägen|gata|gade|vej|veien|vegen|torget|katu|kuja)"
_A_DE_PREP = r"(?:Am|An der|An den|Im|In der|In den|Auf der|Auf dem|Unter den|Zum|Zur)[ \t]+"
_A_SF = (rf"(?:(?:{_A_DE_PREP})?{_UP}{_L}*(?:-{_L}+)*-?{_A_SUFFIX}|{_A_DE_PREP}{_AW}"
         rf"|(?:{_AW}[ \t]+){{1,3}}(?:Straße|Strasse|Str\.|Weg|Gasse|Platz|Allee|Ring|Damm|Ufer|gate|gata|vei|veien|"
         rf"vej|náměstí|nábřeží|třída|ulice|ulica|ulitsa|prospekt|pereulok|shosse|bulvar|naberezhnaya|ploshchad|"
         rf"vulytsia|utca|út|tér|iela|gatvė|tänav|sokak|sokağı|caddesi|cad\.)"
         rf"|(?:Calle|C/|Avenida|Avda\.?|Av\.|Paseo|Plaza|Carrer|Passeig|Plaça|Ronda|Camino|Carretera|Calzada|Via|"
         rf"Viale|Piazza|Piazzale|Corso|Largo|Vicolo|Strada|Rua|Travessa|Praça|Estrada|Alameda|Rodovia|Rue|Avenue|"
         rf"Boulevard|Chaussée|Place|Quai|ul\.|Ul\.|ulica|al\.|Aleja|Plac|Jirón)[ \t]+{_A_WORDS})"
         rf",?[ \t]+{_A_NUM}(?![\d.,]\d)")
_A_POST = r"(?:\d{3,5}-\d{3,4}|\d{5}|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}|" \
          r"[A-Z]\d{2}[ \t]?[A-Z\d]{4}|\d{4}[ \t]?[A-Z]{2}|\d{2}-\d{3}|\d{3}[ \t]\d{2}|\d{4,6})(?![\w-])"
_A_CITY = rf"{_AW}(?:[ \t-]+(?:(?:de|do|da|del|la|le|los|upon|on|sur|am|an|im|bei)[ \t]+)?{_AW}){{0,3}}" \
          rf"(?:[ \t]+(?:\d{{1,2}}|[A-Z]))?(?![\w-])"
_A_UNIT = r"(?:(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|Building|Dept|Box)\.?[ \t]*#?[ \t]*[\w-]+|" \
          r"#[ \t]?[\w-]+|\d{1,2}\.?[ \t]?[º°ªo](?:[ \t]?(?:[A-Z]|Esq|Dto|Dcha|Izq|Izda|Dta)\b\.?)?)"
_ADDRESS = re.compile(
    rf"(?<![\w/.-])(?=\d|{_UP}|ul\.|al\.|ulica)(?:(?P<en>{_A_EN})|(?P<fr>{_A_FR})|(?P<sf>{_A_SF})"
    rf"|(?P<gen>{_UP}{_LO}{{2,}}[ \t]+\d{{1,4}}[a-z]?(?=,[ \t]*(?:\d{{4,5}}|\d{{4}}[ \t]?[A-Z]{{2}})[ \t]+{_UP}))"
    rf"|(?P<jp>\d{{1,4}}-\d{{1,4}}(?:-\d{{1,4}})?[ \t]+{_UP}{_LO}+(?:-{_L}+)*(?=,))"
    rf"|(?P<box>(?:P\.?[ \t]?O\.?[ \t]?Box|Post Office Box|Postfach|Apartado(?: de Correos)?|Caixa Postal)"
    rf"[ \t]*\d{{1,6}}))"
    rf"|(?=[〒\u3400-\u9fff\u3040-\u30ff])(?P<cjk>(?:〒[ \t]?\d{{3}}-\d{{4}}[ \t]*)?[\u3400-\u9fff\u3040-\u30ff]*"
    rf"[都道府県省市区町村郡][\u3400-\u9fff\u3040-\u30ff]*\d+(?:[-－]\d+){{0,3}}[号番地]?)")  # 東京都渋谷区渋谷2-21-1
_A_TAIL = re.compile(rf"(?P<sep>,[ \t]*|[ \t]*\n[ \t]*|[ \t]+-[ \t]+|[ \t]+)"
                     rf"(?:(?P<unit>{_A_UNIT})|(?P<post>{_A_POST}(?:[ \t]+{_A_CITY})?)"
                     rf"|(?P<region>[A-Z]{{2,3}}(?![\w-]))|(?P<city>{_A_CITY}))")
_A_LEFT = re.compile(rf"(?:(?:Flat|Apt|Apartment|Unit|Suite|Ste|Room|Floor|Level)\.?[ \t]*#?[\w-]+,?[ \t]+)?"
                     rf"(?:{_AW}(?:[ \t]+{_AW}){{0,2}}[ \t]+(?:House|Court|Building|Apartments|Apts|Tower|Towers|"
                     rf"Mansions|Lodge|Hall|Block|Residences?|Heights|Centre|Center|Chambers|Cottage|Manor|Villas),?"
                     rf"[ \t]+)?\Z")
_A_CUE = re.compile(r"(?i:\b(?:address(?:\s+is)?|adresse|live[sd]?\s+at|living\s+at|(?:ship|deliver|send|sent|post|"
                    r"mail)(?:ped|ed)?(?:\s+it)?\s+to|moved\s+(?:from|to)|collect\s+from|i['’]m\s+at)\s*:?\s*)\Z")


def _address_spans(text: str) -> list[Span]:
    lex = _lexicon()
    stop, words = lex["stop"], lex["word"]
    if not _DIGIT.search(text):
        return []
    out = []
    for m in _ADDRESS.finditer(text):
        start, end, kind = m.start(), m.end(), m.lastgroup
        parts = 0
        while parts < 6 and (t := _A_TAIL.match(text, end)):
            part = t.group(t.lastgroup)
            if t.lastgroup == "city" and ("\n" not in t["sep"] and not t["sep"].strip(" \t")
                                          or part.split()[0] in stop):
                break  # a city follows a comma or a dash, and is no greeting or "Please"
            line_end = text.find("\n", t.end())
            if "\n" in t["sep"] and not _DIGIT.search(part + text[t.end():line_end if line_end >= 0 else len(text)]):
                break  # on a new line only a line with a postcode belongs to the address
            end, parts = t.end(), parts + 1
        if kind == "gen" and (m.group().split()[0].lower() in words or m.group().split()[0] in stop):
            continue  # "Chapter 11, 2024 ...": a street needs a name, not a word
        if kind in ("fr", "jp") and not parts and not _A_CUE.search(text, max(0, start - 40), start):
            continue  # "24 Rue Cler postcards": a French street needs a city, a postcode or "ship to"
        if kind in ("en", "fr", "sf", "jp") and (left := _A_LEFT.search(text, max(0, start - 80), start)):
            start = left.start()
        while text[end - 1] in ".,;:":
            end -= 1  # the sentence's full stop is not part of the address
        out.append(Span(start, end, "ADDRESS", text[start:end]))
    return out
